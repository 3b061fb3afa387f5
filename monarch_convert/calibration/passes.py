"""Passes of a converted model over the calibration batches, with a probe in place of the op
(``patches/dispatch.py``, ``PROBE_ATTR``): the probe sees each converted module's exact q, k, v
and key mask, computes softmax attention on them (the reference ``s``) and the Monarch output
``z``, accumulates their :class:`~monarch_convert.calibration.correction.HeadStats` on the real
tokens, and says what flows on to the next layer.

- :func:`candidate_stats`: every candidate setting of every layer on the original model's hidden
  states (softmax flows on): the per-layer errors the search ranks settings by.
- :func:`fit_calibration`: the correction fitted layer by layer from the input up: each layer's
  statistics come from a pass in which the layers below already run converted and corrected, and
  the pass stops at that layer.
- :func:`measure`: held-out fidelity of the model as it is (output against the softmax model's,
  :func:`features`), and each converted layer's statistics on the same pass.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch

from ..evaluation.progress import progress_bar
from ..patches.dispatch import PROBE_ATTR, MonarchSpec, run_spec
from ..pooling import mean_pool
from .correction import Calibration, HeadStats, fit_correction
from .folding import has_output_bias


class _Stop(Exception):
    """Raised by a probe once the layer it fits has seen its batch: the rest of the pass is not needed."""


def softmax_attention(q, k, v, key_padding, scale) -> torch.Tensor:
    mask = None if key_padding is None else key_padding[:, None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def real_tokens(x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
    """(batch, heads, seq, d) -> (heads, real tokens, d)."""
    x = x.transpose(0, 1)
    if key_padding is None:
        return x.reshape(x.shape[0], -1, x.shape[-1])
    return x[:, key_padding]


@contextlib.contextmanager
def probes(modules: dict[str, torch.nn.Module], make: Callable[[str], Callable]) -> Iterator[None]:
    """Each module of ``modules`` (name -> module) runs the probe ``make(name)`` instead of the op."""
    for name, module in modules.items():
        setattr(module, PROBE_ATTR, make(name))
    try:
        yield
    finally:
        for module in modules.values():
            module.__dict__.pop(PROBE_ATTR, None)


def forward(model: Any, inputs: dict) -> Any:
    """The model on ``inputs`` (an encoder-decoder's encoder only: only it is converted)."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "inputs_embeds")}
        return model.get_encoder()(**inputs, output_hidden_states=True)
    return model(**inputs, output_hidden_states=True)


def features(model: Any, inputs: dict) -> tuple[str, torch.Tensor]:
    """What fidelity compares: ``("probabilities", ...)`` of a classifier (2-D logits), else
    ``("embedding", ...)``: the mean-pooled, normalised last hidden state (as sentence embeddings)."""
    out = forward(model, inputs)
    logits = getattr(out, "logits", None)
    if logits is not None and logits.dim() == 2:
        return "probabilities", torch.softmax(logits.float(), -1).cpu()
    hidden = getattr(out, "last_hidden_state", None)
    hidden = (hidden if hidden is not None else out.hidden_states[-1]).float()
    mask = inputs.get("attention_mask")
    pooled = hidden.mean(1) if mask is None else mean_pool(hidden, mask)
    return "embedding", torch.nn.functional.normalize(pooled, dim=-1).cpu()


def similarity(ref: tuple[str, torch.Tensor], new: tuple[str, torch.Tensor]) -> torch.Tensor:
    """Per example (of two :func:`features`): probability overlap ``sum min(p, q)`` (1 - total
    variation) for class probabilities, cosine for embeddings; 1 means identical."""
    if ref[0] == "probabilities":
        return torch.minimum(ref[1], new[1]).sum(-1)
    return torch.nn.functional.cosine_similarity(ref[1], new[1], dim=-1)


def run_batches(model: Any, batches: Sequence[dict], desc: str, progress: bool, step: Callable[[dict], Any]) -> list:
    """``step(inputs)`` for each batch (moved to the model's device), without gradients; a
    :class:`_Stop` ends that batch's pass."""
    device = next(model.parameters()).device
    results = []
    with torch.no_grad():
        for batch in progress_bar(batches, desc, progress):
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            try:
                results.append(step(inputs))
            except _Stop:
                pass
    return results


def candidate_stats(model: Any, modules: dict[str, torch.nn.Module], specs: dict[str, list[MonarchSpec]],
                    batches: Sequence[dict], progress: bool) -> dict[str, list[tuple[HeadStats, HeadStats]]]:
    """For each module and each of its candidate ``specs``: statistics on two halves of the
    examples (alternate ones), to fit a correction on one and measure it on the other."""
    stats = {name: [(HeadStats(), HeadStats()) for _ in specs[name]] for name in modules}
    seen = [0]  # examples of the batches before

    def make(name: str) -> Callable:
        def probe(spec, q, k, v, key_padding, scale):
            s = softmax_attention(q, k, v, key_padding, scale)
            outputs = [run_spec(candidate, q, k, v, key_padding, scale) for candidate in specs[name]]
            for half in (0, 1):
                rows = slice((half + seen[0]) % 2, None, 2)
                padding = None if key_padding is None else key_padding[rows]
                ref = real_tokens(s[rows], padding)
                for z, pair in zip(outputs, stats[name]):
                    pair[half].add(real_tokens(z[rows], padding), ref)
            return s  # softmax flows on: the original model's hidden states

        return probe

    def step(inputs: dict) -> None:
        forward(model, inputs)
        seen[0] += len(next(iter(inputs.values())))

    with probes(modules, make):
        run_batches(model, batches, "calibration: per-layer errors", progress, step)
    return stats


def fit_calibration(model: Any, modules: dict[str, torch.nn.Module], batches: Sequence[dict], kind: str,
                    alpha: float | None, progress: bool, apply: Callable[[Calibration], Any]) -> Calibration:
    """The correction of kind ``kind`` for every module of ``modules`` (in forward order), fitted
    from the input up: module i's statistics come from passes where modules before it run with
    their corrections folded in (``apply(calibration)`` folds the corrections so far)."""
    calibration = Calibration(kind)
    for name, module in modules.items():
        stats = HeadStats()

        def probe(spec, q, k, v, key_padding, scale, stats=stats):
            z = run_spec(spec, q, k, v, key_padding, scale)
            s = softmax_attention(q, k, v, key_padding, scale)
            stats.add(real_tokens(z, key_padding), real_tokens(s, key_padding))
            raise _Stop  # the layers above are not needed for this one

        with probes({name: module}, lambda _: probe):
            run_batches(model, batches, f"calibration: {kind} correction of {name}", progress,
                        lambda x: forward(model, x))
        weight, bias = fit_correction(stats, kind, alpha, bias=has_output_bias(model, name))
        calibration.weights[name], calibration.biases[name] = weight.float(), bias.float()
        apply(calibration)
    return calibration


def measure(model: Any, modules: dict[str, torch.nn.Module], batches: Sequence[dict], reference: list[tuple],
            desc: str, progress: bool) -> tuple[torch.Tensor, dict[str, HeadStats]]:
    """Per held-out example the similarity of the model's :func:`features` to ``reference`` (the
    softmax model's, batch by batch), and each module's statistics of its (uncorrected) output
    against softmax on the same hidden states."""
    stats = {name: HeadStats() for name in modules}

    def make(name: str) -> Callable:
        def probe(spec, q, k, v, key_padding, scale):
            z = run_spec(spec, q, k, v, key_padding, scale)
            s = softmax_attention(q, k, v, key_padding, scale)
            stats[name].add(real_tokens(z, key_padding), real_tokens(s, key_padding))
            return z

        return probe

    with probes(modules, make):
        outputs = run_batches(model, batches, desc, progress, lambda x: features(model, x))
    return torch.cat([similarity(r, o) for r, o in zip(reference, outputs)]), stats
