"""What ``convert`` will do to a model, decided without changing it.

:func:`plan_conversion` reads the model and the requested settings and returns a
:class:`ConversionPlan`: the resolved settings, one :class:`ModuleRecord` per attention module
(converted, or skipped with the reason) and the modules to convert. Nothing here writes to the
model, and every error a user can cause is raised here, so a failed ``convert`` leaves the model
(and any conversion already in place) as it was; ``conversion.py`` applies the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch

from .config import Layers, MonarchConfig, auto_block_size, load_preset
from .conversion_records import ModuleRecord
from .errors import MonarchConvertError
from .patches.base import ArchitecturePatch, layer_index
from .patches.registry import get_patch, unsupported_message


class _Found(NamedTuple):
    """An attention module of the model, and why it cannot be converted (``None``: it can)."""

    name: str
    module: torch.nn.Module
    reason: str | None


@dataclass(frozen=True)
class ConversionPlan:
    """Everything ``convert`` applies. ``settings`` has every field set: ``block_size`` an integer,
    ``layers`` ``"all"`` or the selected layers that exist."""

    model_type: str
    settings: MonarchConfig
    max_length: int
    records: tuple[ModuleRecord, ...]
    to_convert: tuple[tuple[str, torch.nn.Module], ...]


def architecture_patch(model: Any) -> ArchitecturePatch:
    """The patcher of ``model``'s architecture; an error for anything else than a transformers
    model of a supported ``model_type``."""
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None or not hasattr(config, "model_type"):
        raise MonarchConvertError(
            f"convert() expects a transformers model (a PreTrainedModel with a config), got {type(model).__name__}"
        )
    patch = get_patch(config.model_type)
    if patch is None:
        raise MonarchConvertError(unsupported_message(config.model_type))
    return patch


def plan_conversion(
    model: torch.nn.Module,
    patch: ArchitecturePatch,
    previous: MonarchConfig | None,
    config: MonarchConfig | dict[str, Any] | None,
    overrides: dict[str, Any],
) -> ConversionPlan:
    """The plan for ``convert(model, config, **overrides)``; ``previous``: the settings of the
    model's current conversion, or those saved in its config (fields the caller leaves unset)."""
    resolved, layers_given = _resolve_settings(patch.model_type, previous, config, overrides)
    found = _find_attention_modules(model, patch)
    layers = _select_layers(resolved.layers, _convertible_layers(found), layers_given, patch.model_type)
    _check_layer_settings(resolved, _convertible_layers(found), patch.model_type)
    max_length = patch.max_length(model.config)
    block_size = auto_block_size(max_length) if resolved.block_size == "auto" else resolved.block_size
    records = tuple(_record(f, layers) for f in found)
    to_convert = tuple((f.name, f.module) for f, r in zip(found, records) if r.status == "converted")
    if not to_convert:
        # A model saved with nothing converted is the original under another name: refuse.
        reasons = "; ".join(sorted({r.reason for r in records if r.reason}))
        convertible = _convertible_layers(found)
        raise MonarchConvertError(
            f"nothing to convert: no attention module of this {patch.model_type} model would be converted "
            f"({reasons}); its convertible layers are {_format_layers(convertible) if convertible else 'none'}"
        )
    return ConversionPlan(
        model_type=patch.model_type,
        settings=replace(resolved, block_size=block_size, layers=layers),
        max_length=max_length,
        records=records,
        to_convert=to_convert,
    )


def _resolve_settings(
    model_type: str,
    previous: MonarchConfig | None,
    config: MonarchConfig | dict[str, Any] | None,
    overrides: dict[str, Any],
) -> tuple[MonarchConfig, bool]:
    """Every field set (the caller's, then ``previous``, the preset, ``DEFAULTS``), and whether
    the caller named the layers (a preset's layers may not all exist; the caller's must)."""
    try:
        if isinstance(config, dict):
            config = MonarchConfig.from_dict(config)
        elif config is not None and not isinstance(config, MonarchConfig):
            raise ValueError(f"config must be a MonarchConfig or a dict, got {type(config).__name__}")
        requested = (previous or MonarchConfig()).merged(config).merged(None, **overrides)
        resolved = requested.resolved(load_preset(model_type))
    except ValueError as e:
        raise MonarchConvertError(str(e)) from e
    caller_named_layers = (config is not None and config.layers is not None) or "layers" in overrides
    return resolved, requested.layers is not None and caller_named_layers


def _find_attention_modules(model: torch.nn.Module, patch: ArchitecturePatch) -> list[_Found]:
    """The model's attention modules, each with why it cannot be converted (or ``None``)."""
    modules = _attention_modules(model, patch)
    if not modules:
        raise MonarchConvertError(
            f"found no attention module ({', '.join(patch.attention_classes)}) in {type(model).__name__}: "
            "this transformers version may lay the model out differently"
        )
    found = []
    for name, module in modules:
        config = getattr(module, "config", None)
        if config is None:
            found.append(_Found(name, module, "module has no config to select its attention"))
        else:
            found.append(_Found(name, module, patch.classify(name, module, config)))
    return found


def _attention_modules(model: torch.nn.Module, patch: ArchitecturePatch) -> list[tuple[str, torch.nn.Module]]:
    wanted = set(patch.attention_classes)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if any(cls.__name__ in wanted for cls in type(module).__mro__)
    ]
    names = [name for name, _ in found]
    # Innermost only: a listed class that wraps another listed class does not call the interface.
    return [(n, m) for n, m in found if not any(o.startswith(n + ".") for o in names if o != n)]


def _convertible_layers(found: list[_Found]) -> list[int]:
    layers = {layer_index(f.name) for f in found if f.reason is None}
    return sorted(layer for layer in layers if layer is not None)


def _select_layers(layers: Layers, convertible: list[int], given: bool, model_type: str) -> Layers:
    """``"all"``, or the requested layers that exist. Layers the model lacks are an error when the
    caller named them, and ignored when they come from a preset (RoBERTa-base's on a smaller
    RoBERTa)."""
    if layers == "all":
        return layers
    missing = [i for i in layers if i not in convertible]
    if missing and given and convertible:
        raise MonarchConvertError(
            f"layers {missing} do not exist: this {model_type} model's convertible layers are "
            f"{_format_layers(convertible)}"
        )
    return tuple(i for i in layers if i in convertible)


def _check_layer_settings(settings: MonarchConfig, convertible: list[int], model_type: str) -> None:
    """Per-layer settings name layers that exist (those not converted keep theirs, unused)."""
    named = [i for i, _ in settings.layer_settings or ()]
    missing = [i for i in named if i not in convertible]
    if missing:
        raise MonarchConvertError(
            f"layer_settings name layers {missing} that do not exist: this {model_type} model's convertible "
            f"layers are {_format_layers(convertible) if convertible else 'none'}"
        )


def _format_layers(layers: list[int]) -> str:
    """Sorted layer indices as ranges, the way ``--layers`` takes them: [0, 1, 2, 3, 8] -> '0-3,8'."""
    ranges: list[list[int]] = []
    for i in layers:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def _record(found: _Found, layers: Layers) -> ModuleRecord:
    layer = layer_index(found.name)
    reason = found.reason
    if reason is None and layers != "all" and layer not in layers:
        reason = "layer not selected"
    return ModuleRecord(
        name=found.name,
        layer=layer,
        status="skipped" if reason else "converted",
        reason=reason,
        num_heads=_first_int_attr(found.module, ("num_heads", "num_attention_heads", "n_heads")),
        head_dim=_first_int_attr(found.module, ("head_dim", "attention_head_size")),
    )


def _first_int_attr(module: torch.nn.Module, names: tuple[str, ...]) -> int:
    # The module's own attribute, else its config's (rotary encoders keep only head_dim on the module).
    for owner in (module, getattr(module, "config", None)):
        for name in names:
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    raise MonarchConvertError(f"cannot read {' / '.join(names)} from {type(module).__name__}")
