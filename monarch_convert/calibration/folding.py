"""Folding a :class:`~monarch_convert.calibration.correction.Calibration` into the attention's
output projection, so that it costs nothing at inference, and undoing it bit for bit.

The output projection ``y = x Wo^T + bo`` reads the heads side by side, ``x = [z_1 ... z_H]``.
With the correction ``x' = x M + c`` (``M`` block-diagonal with the heads' ``W_h``)::

    y = x (M Wo^T) + (c Wo^T + bo)    so    Wo' = Wo M^T,  bo' = bo + Wo c

computed in float64 and stored in the weight's dtype. The original tensors are kept (clones) and
copied back by :meth:`Folded.unfold`; ``state_dict()`` (so ``save_pretrained``) gives the
original ones while the correction is folded in, so that a checkpoint's weights always stay the
softmax model's and the correction travels in its own file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import MonarchConvertError
from ..patches.base import ArchitecturePatch
from .correction import Calibration


@dataclass
class Folded:
    """A calibration folded into a model: the Linear modules changed and their original tensors."""

    calibration: Calibration
    originals: list[tuple[torch.nn.Linear, torch.Tensor, torch.Tensor | None]] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)

    def unfold(self) -> None:
        """Put the original weights back (bit for bit) and remove the state-dict hooks."""
        with torch.no_grad():
            for linear, weight, bias in self.originals:
                linear.weight.copy_(weight)
                if bias is not None:
                    linear.bias.copy_(bias)
        for handle in self.handles:
            handle.remove()
        self.originals.clear()
        self.handles.clear()


def output_projection(model: torch.nn.Module, patch: ArchitecturePatch, module_name: str) -> torch.nn.Linear:
    """The output projection of the attention module ``module_name`` (``patch.output_projection``)."""
    names = patch.output_projection_names(module_name)
    for name in names:
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(linear, torch.nn.Linear):
            return linear
    raise MonarchConvertError(f"{patch.model_type}: no output projection Linear at {' or '.join(names)}")


def has_output_bias(model: torch.nn.Module, module_name: str) -> bool:
    """Whether the output projection of ``module_name`` has a bias (a correction's bias folds into it)."""
    from ..conversion_plan import architecture_patch

    return output_projection(model, architecture_patch(model), module_name).bias is not None


def folded_tensors(linear: torch.nn.Linear, weight: torch.Tensor,
                   bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Wo', bo') of ``linear`` with the correction ``weight`` (H, d, d), ``bias`` (H, d) folded in."""
    heads, d, _ = weight.shape
    wo = linear.weight.detach().double()
    if wo.shape[1] != heads * d:
        raise MonarchConvertError(f"correction of {heads} heads x {d} does not match a Linear of {wo.shape[1]} inputs")
    # The correction may have been fitted, or loaded, on another device than the weights.
    weight, bias = weight.to(wo.device, torch.float64), bias.to(wo.device, torch.float64)
    m = torch.block_diag(*weight.unbind(0))
    bo = linear.bias.detach().double() if linear.bias is not None else wo.new_zeros(wo.shape[0])
    return wo @ m.T, bo + wo @ bias.reshape(-1)


def fold(model: torch.nn.Module, patch: ArchitecturePatch, calibration: Calibration) -> Folded:
    """Fold ``calibration`` into ``model``'s output projections (in place); the :class:`Folded`."""
    targets = []
    for name, weight in calibration.weights.items():
        linear = output_projection(model, patch, name)
        if linear.bias is None and bool(calibration.biases[name].any()):
            raise MonarchConvertError(f"the output projection of {name} has no bias to fold the correction's into")
        targets.append((linear, *folded_tensors(linear, weight, calibration.biases[name])))
    folded = Folded(calibration)  # every check above, before anything is changed
    with torch.no_grad():
        for linear, new_weight, new_bias in targets:
            original_bias = linear.bias.detach().clone() if linear.bias is not None else None
            folded.originals.append((linear, linear.weight.detach().clone(), original_bias))
            linear.weight.copy_(new_weight.to(linear.weight.dtype))
            if linear.bias is not None:
                linear.bias.copy_(new_bias.to(linear.bias.dtype))
            folded.handles.append(linear.register_state_dict_post_hook(_originals_hook(folded.originals[-1])))
    return folded


def _originals_hook(original: tuple[torch.nn.Linear, torch.Tensor, torch.Tensor | None]):
    """A state-dict hook that reports the original tensors of a Linear whose weights are folded."""
    _, weight, bias = original

    def hook(module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        if prefix + "weight" in state_dict:
            state_dict[prefix + "weight"] = weight
        if bias is not None and prefix + "bias" in state_dict:
            state_dict[prefix + "bias"] = bias

    return hook
