"""The teacher: the model's outputs as its original weights give them on softmax attention.

By default the teacher is the model being healed, run on softmax (``conversion.base_attention``)
with its original weights, so that no second model is held. The weights healing moves change
from step to step, so a copy of those weights alone is kept as they were before the first step
and substituted for the moving ones in the teacher's forward pass (``torch.func.functional_call``:
the model object is not modified, and gradients never reach the copy):

- ``trainable="attention"``: a copy of the attention projections only (about a third of an
  encoder layer's weights, nothing of the embeddings and MLPs);
- ``trainable="lora"``: no copy at all (the base weights never move: the adapter is disabled);
- ``trainable="all"``: a copy of every weight, the one case that holds the model's weights twice.

A teacher model given by the caller is run as it is (under ``softmax`` if it is converted).
"""

from __future__ import annotations

from typing import Any

from .trainable import Trainable


class Teacher:
    """``teacher(inputs)``: the original model's output for ``inputs`` (no gradient)."""

    def __init__(self, model: Any, trainable: Trainable, given: Any = None, unfolded: dict | None = None):
        self.model, self.trainable, self.given = model, trainable, given
        # The weights as they were before healing (LoRA leaves its base weights alone: none kept).
        kept = [] if given is not None or trainable.kind == "lora" else trainable.names
        named = dict(model.named_parameters())
        self.originals = {name: named[name].detach().clone() for name in kept}
        # A calibration baked into the output projections (``bake_calibration``): the original
        # model ran them without it. Keyed by the Parameter, whose name LoRA may have changed.
        if given is None:
            self.originals.update({n: unfolded[id(p)] for n, p in named.items() if id(p) in (unfolded or {})})
        self.substitutes = _with_tied_names(model, self.originals)


    @property
    def kept_bytes(self) -> int:
        """Memory held by the copy of the original weights."""
        return sum(t.numel() * t.element_size() for t in self.originals.values())

    def __call__(self, inputs: dict) -> Any:
        """The original's output for ``inputs``: the given teacher's, or the healed model's with
        its original weights on softmax attention."""
        import torch
        from torch.func import functional_call

        from ..conversion import base_attention

        model = self.given if self.given is not None else self.model
        with torch.no_grad(), base_attention(model), self.trainable.original_weights_context():
            if not self.originals:
                return model(**inputs)
            # The tied names are in ``substitutes``: functional_call need not look for them every step.
            return functional_call(model, self.substitutes, args=(), kwargs=inputs, strict=False, tie_weights=False)


def _with_tied_names(model: Any, originals: dict) -> dict:
    """``originals`` plus, for each, every other name of the same Parameter (a weight tied to
    another, such as a language-model head's to the word embeddings): what functional_call's
    ``tie_weights=True`` adds at each call, by walking every name of the model (0.8 ms of host
    time for BERT-base on a CPU core of the development machine, 0.3 ms without)."""
    first = {id(p): name for name, p in model.named_parameters()}  # named_parameters gives a tied one once
    substitutes = dict(originals)
    for name, p in model.named_parameters(remove_duplicate=False):
        if first.get(id(p)) in originals:
            substitutes.setdefault(name, originals[first[id(p)]])
    return substitutes


def bake_calibration(model: Any) -> dict[int, Any]:
    """Make a calibration folded into ``model`` (``monarch_convert.calibrate``) part of its weights:
    healing starts from the calibrated output projections and trains them further, so the saved
    weights carry the correction and no calibration file is needed. Returns the projections'
    weights from before the fold, by ``id`` of their Parameter, for the teacher (the original model
    has no correction); ``{}`` when nothing is folded."""
    from ..conversion import CONFIG_KEY, _state

    state = _state(model)
    if state is None or getattr(state, "folded", None) is None:
        return {}
    unfolded = {}
    for linear, weight, bias in state.folded.originals:
        unfolded[id(linear.weight)] = weight
        if bias is not None:
            unfolded[id(linear.bias)] = bias
    for handle in state.folded.handles:  # they made save_pretrained write the unfolded weights
        handle.remove()
    state.folded = None
    getattr(model.config, CONFIG_KEY, {}).pop("calibration", None)
    return unfolded
