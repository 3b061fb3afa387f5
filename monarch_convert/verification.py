"""``convert(model, verify=True)``: check, on a small dummy input, that the converted model's
attention is wired right.

MonarchAttention with block size 1 is exact softmax attention (docs/algorithm.md), so a converted
model run with ``block_size=1`` must give, module by module, the outputs of the original softmax
model. Any difference means the patcher does not fit the model (a bias it does not see, a mask
that is not key padding, another scale): the first converted module, in the order the model runs
them, whose output differs is named in the error.

The check runs the model twice on one row of the architecture's dummy input
(``patches/inputs.py``, 16 tokens or audio frames; images, video and spectrograms at the config's
size): once as the original (``softmax``), once converted with every module's block size set to 1;
the conversion is left as it was. Where that row is longer than ``BLOCK_SIZE_ONE_UP_TO`` positions
(Whisper's fixed 1500, a ViT at 518 px), the converted run uses a block as long as the sequence
instead, the other exact case: MonarchAttention with b = 1 costs about 15 times softmax on the CPU
at N = 1500, and the check is about the wiring (queries, keys, values, scale, mask), which both
exact cases go through alike.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import torch

from .errors import MonarchConvertError
from .patches.dispatch import SPEC_ATTR

# Longest dummy row: long enough for a few blocks of any preset, short enough to cost a fraction of a second.
DUMMY_LENGTH = 16

# Longest sequence checked at block size 1; longer ones are checked with one block as long as the sequence.
BLOCK_SIZE_ONE_UP_TO = 256

# Largest difference allowed, relative to the largest output of the module (round-off of one dtype).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-8}


def verify_conversion(
    model: Any, modules: tuple[tuple[str, torch.nn.Module], ...], dummy_inputs: Any, max_length: int
) -> None:
    """Raise :class:`MonarchConvertError` naming the first converted module (of ``modules``) whose
    output at block size 1 (or, beyond ``BLOCK_SIZE_ONE_UP_TO`` positions, the sequence's length)
    differs from the original model's."""
    from .conversion import softmax

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    inputs = dummy_inputs(model.config, (min(max_length, DUMMY_LENGTH),))
    inputs = {k: v.to(device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
    runner = _base_model(model)
    with _eval(model), torch.no_grad():
        with softmax(model):
            reference = _module_outputs(runner, modules, inputs)
        longest = max((t.shape[1] for t in reference.values() if t.dim() > 1), default=1)
        block_size = 1 if longest <= BLOCK_SIZE_ONE_UP_TO else longest
        with _exact_block_size(modules, block_size):
            converted = _module_outputs(runner, modules, inputs)
    # In the order the modules ran (the first difference is the cause; later ones may inherit it),
    # then any that did not run.
    names = list(converted) + [name for name, _ in modules if name not in converted]
    for name in names:
        _compare(name, reference.get(name), converted.get(name), TOLERANCE.get(dtype, 1e-2), block_size)


def _base_model(model: Any) -> Any:
    """What the check runs: a model with a task head runs its base model (BertModel inside
    BertForMultipleChoice), which holds every attention module and takes the modality's plain
    inputs whatever the head expects; a model that is already a base model (an ``AutoModel``
    class) runs itself (DINOv3's ``base_model`` names its encoder, which takes hidden states)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    names = {n for v in MODEL_MAPPING_NAMES.values() for n in ((v,) if isinstance(v, str) else v)}
    base = getattr(model, "base_model", None)
    if type(model).__name__ in names or base is None or type(base).__name__ not in names:
        return model
    return base


@contextmanager
def _eval(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off for the check; the model's training mode back afterwards."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


@contextmanager
def _exact_block_size(modules: tuple[tuple[str, torch.nn.Module], ...], block_size: int) -> Iterator[None]:
    specs = [(module, getattr(module, SPEC_ATTR)) for _, module in modules]
    try:
        for module, spec in specs:
            setattr(module, SPEC_ATTR, replace(spec, block_size=block_size))
        yield
    finally:
        for module, spec in specs:
            setattr(module, SPEC_ATTR, spec)


def _module_outputs(model: Any, modules: tuple[tuple[str, torch.nn.Module], ...], inputs: dict) -> dict:
    """Each module's first output (a tensor) during one forward of ``model``; an error for a forward
    that fails (the dummy input does not suit the model, or a converted module refuses its mask)."""
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module, args, output):
            first = output[0] if isinstance(output, (tuple, list)) else output
            outputs.setdefault(name, first.detach().float())

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules]
    try:
        model(**inputs)
    except MonarchConvertError as e:
        raise MonarchConvertError(f"verification failed: {e}") from e
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MonarchConvertError(f"verification could not run the model on a dummy input: {first_line}") from e
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _compare(
    name: str, reference: torch.Tensor | None, converted: torch.Tensor | None, tolerance: float, block_size: int
) -> None:
    if reference is None or converted is None:
        raise MonarchConvertError(
            f"verification failed: converted attention module {name} did not run on the dummy input"
        )
    scale = reference.abs().max().item() or 1.0
    error = (reference - converted).abs().max().item() / scale
    if not error <= tolerance:  # "not <=": a NaN fails too
        raise MonarchConvertError(
            f"verification failed: converted attention module {name} differs from softmax attention at block size "
            f"{block_size} (relative error {error:.2e} > {tolerance:.0e}): this architecture's patcher does not fit "
            "the model"
        )
