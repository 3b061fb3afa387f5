"""``convert`` / ``revert`` a transformers model in place, and the report of what was converted.

How it works (see ``patches/dispatch.py`` for the details):

1. The architecture's patcher (``patches/<model_type>.py``, looked up by ``config.model_type``)
   names the module classes that call transformers' attention interface; each such module is
   classified as converted or skipped (cross-attention, causal, attention bias, layer not
   selected), with the reason.
2. Converted modules get a ``_monarch_spec`` attribute (block size, steps, padding, backend).
3. The config they read their attention implementation from is switched from ``<base>`` to
   ``monarch_<base>``, registered with transformers' ``AttentionInterface`` and
   ``AttentionMaskInterface``: the model's masks keep being built where the model builds them,
   converted modules get the (batch, seq) key-padding mask and run MonarchAttention, and every
   other module runs ``<base>`` exactly as before.

No class is replaced, no forward rebound, no weight touched: ``revert`` removes the attributes
and puts ``<base>`` back. The resolved settings are also written to the model config under
``monarch_attention``, so ``save_pretrained`` records them (``from_pretrained`` in
``loading.py`` reapplies them; plain transformers ignores the key and loads softmax attention).
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Iterator

import torch

from .config import MonarchConfig, auto_block_size
from .errors import MonarchConvertError
from .flops import format_flops, monarch_attention_flops, softmax_attention_flops
from .patches.dispatch import (
    SPEC_ATTR,
    MonarchSpec,
    base_implementation,
    ensure_registered,
    is_monarch_implementation,
)
from .patches.base import ArchitecturePatch, layer_index
from .patches.registry import get_patch, supported_model_types

STATE_ATTR = "_monarch_conversion"
CONFIG_KEY = "monarch_attention"


# ----------------------------------------------------------------------------------------------
# Records and report


@dataclass(frozen=True)
class ModuleRecord:
    """One attention module: converted, or skipped with the reason."""

    name: str
    layer: int | None
    status: str  # "converted" | "skipped"
    reason: str | None
    num_heads: int
    head_dim: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "status": self.status, "reason": self.reason}


@dataclass
class _State:
    model_type: str
    settings: MonarchConfig
    max_length: int
    records: list[ModuleRecord]
    converted: list[torch.nn.Module] = field(default_factory=list)
    bases: list[tuple[Any, str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class ConversionReport:
    """What ``convert`` did: settings, modules converted or skipped (and why), attention FLOPs.

    ``to_dict()`` is the ``conversion.json`` the CLI writes; ``format_table()`` its summary.
    FLOPs count the attention products (q k^T and A v for softmax; section 3's formula for
    Monarch) of every attention module listed, at query and key length ``seq_len``, for one
    sequence with all heads; modules left on softmax count at softmax cost in both columns.
    """

    model_type: str
    source_model: str | None
    settings: MonarchConfig
    modules: tuple[ModuleRecord, ...]
    seq_len: int
    max_length: int

    @property
    def converted(self) -> list[ModuleRecord]:
        return [r for r in self.modules if r.status == "converted"]

    @property
    def skipped(self) -> list[ModuleRecord]:
        return [r for r in self.modules if r.status == "skipped"]

    @property
    def attention_flops(self) -> dict[str, Any]:
        n = self.seq_len
        softmax = monarch = 0
        for r in self.modules:
            dense = softmax_attention_flops(n, r.head_dim, r.num_heads)
            softmax += dense
            if r.status == "converted":
                monarch += monarch_attention_flops(
                    n, r.head_dim, self.settings.block_size, self.settings.num_steps, r.num_heads
                )
            else:
                monarch += dense
        return {"seq_len": n, "softmax": softmax, "monarch": monarch, "ratio": monarch / softmax if softmax else 1.0}

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {
            "monarch_convert_version": __version__,
            "source_model": self.source_model,
            "model_type": self.model_type,
            "settings": self.settings.to_dict(),
            "modules": [r.to_dict() for r in self.modules],
            "attention_flops": self.attention_flops,
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self) -> str:
        s = self.settings
        layers = "all" if s.layers == "all" else ",".join(str(i) for i in s.layers) or "none"
        lines = [
            f"MonarchAttention conversion of {self.source_model or 'model'} ({self.model_type})",
            f"settings: block_size={s.block_size} num_steps={s.num_steps} pad_type={s.pad_type} "
            f"layers={layers} backend={s.backend}",
            f"attention modules: {len(self.converted)} converted, {len(self.skipped)} skipped",
        ]
        width = max([len("module")] + [len(r.name) for r in self.modules])
        lines.append(f"  {'module':<{width}}  {'layer':>5}  {'status':<9}  reason")
        for r in self.modules:
            layer = "-" if r.layer is None else str(r.layer)
            lines.append(f"  {r.name:<{width}}  {layer:>5}  {r.status:<9}  {r.reason or ''}".rstrip())
        f = self.attention_flops
        lines.append(
            f"attention FLOPs at seq_len={f['seq_len']}: softmax {format_flops(f['softmax'])} -> "
            f"monarch {format_flops(f['monarch'])} ({100 * f['ratio']:.1f}%)"
        )
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Presets and model inspection


def load_preset(model_type: str) -> dict[str, Any]:
    """The architecture's preset from ``monarch_convert/configs/<model_type>.json`` (keys starting
    with ``_`` are comments), or ``{}``."""
    path = resources.files("monarch_convert.configs").joinpath(f"{model_type}.json")
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _patch_for(model: Any) -> ArchitecturePatch:
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None or not hasattr(config, "model_type"):
        raise MonarchConvertError(
            f"convert() expects a transformers model (a PreTrainedModel with a config), got {type(model).__name__}"
        )
    patch = get_patch(config.model_type)
    if patch is None:
        raise MonarchConvertError(
            f"unsupported model type {config.model_type!r}: monarch-convert supports "
            f"{', '.join(supported_model_types())}"
        )
    return patch


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


def _first_attr(module: torch.nn.Module, names: tuple[str, ...]) -> int:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise MonarchConvertError(f"cannot read {' / '.join(names)} from {type(module).__name__}")


def stored_settings(model: torch.nn.Module) -> MonarchConfig | None:
    """The settings a converted checkpoint recorded in its config (``config.monarch_attention``),
    or ``None``."""
    entry = getattr(model.config, CONFIG_KEY, None)
    if not entry:
        return None
    try:
        return MonarchConfig.from_dict(dict(entry["settings"]))
    except (KeyError, TypeError, ValueError) as e:
        raise MonarchConvertError(f"the model config's {CONFIG_KEY!r} entry is invalid: {e}") from e


# ----------------------------------------------------------------------------------------------
# Public API


def convert(model: Any, config: MonarchConfig | dict[str, Any] | None = None, **overrides: Any) -> Any:
    """Convert ``model``'s non-causal self-attention to MonarchAttention, in place; returns ``model``.

    config: a :class:`MonarchConfig` (or a dict of its fields); keyword ``overrides`` set the
        same fields (``block_size``, ``num_steps``, ``pad_type``, ``layers``, ``backend``).
        Fields left unset come, in order, from the model's current conversion (when converting
        again), from the settings saved in its config (``config.monarch_attention``, e.g. a
        checkpoint written by a converted model and loaded with plain transformers), from the
        architecture's preset (``monarch_convert/configs/<model_type>.json``), then from
        ``config.DEFAULTS``. ``block_size="auto"`` is resolved to an integer here.
    layers: indices in the stack of convertible layers (for BART, the encoder's). Indices the
        model lacks are an error when given by the caller, and ignored when they come from a
        preset (the RoBERTa-base preset on a smaller RoBERTa).

    Idempotent: converting a converted model again with no new settings changes nothing; with
    new settings, it is reconverted with them. Cross-attention, causal self-attention and
    modules whose scores carry a bias are never converted (listed as skipped, with the reason).
    Raises :class:`MonarchConvertError` for an unsupported ``model_type`` or invalid settings.

    Training works (gradients flow through MonarchAttention), but converted modules apply no
    dropout to attention weights (there is no attention matrix to drop from); ``output_attentions``
    gives ``None`` for them. Switching the attention implementation afterwards
    (``model.set_attn_implementation``) bypasses the conversion: ``revert`` first.
    """
    patch = _patch_for(model)
    state: _State | None = getattr(model, STATE_ATTR, None)
    if state is not None:
        base_settings = state.settings
    else:
        base_settings = stored_settings(model) or MonarchConfig()
    try:
        if isinstance(config, dict):
            config = MonarchConfig.from_dict(config)
        elif config is not None and not isinstance(config, MonarchConfig):
            raise ValueError(f"config must be a MonarchConfig or a dict, got {type(config).__name__}")
        requested = base_settings.merged(config).merged(None, **overrides)
        resolved = requested.resolved(load_preset(patch.model_type))
    except ValueError as e:
        raise MonarchConvertError(str(e)) from e
    layers_given = requested.layers is not None and (
        (config is not None and config.layers is not None) or "layers" in overrides
    )

    modules = _attention_modules(model, patch)
    if not modules:
        raise MonarchConvertError(
            f"found no attention module ({', '.join(patch.attention_classes)}) in {type(model).__name__}: "
            "this transformers version may lay the model out differently"
        )
    reasons = {}
    for name, module in modules:
        cfg = getattr(module, "config", None)
        reasons[name] = "module has no config to select its attention" if cfg is None else patch.classify(name, module, cfg)
    eligible = sorted({layer_index(n) for n, _ in modules if reasons[n] is None and layer_index(n) is not None})

    layers = resolved.layers
    if layers != "all":
        missing = [i for i in layers if i not in eligible]
        if missing and layers_given and eligible:
            raise MonarchConvertError(
                f"layers {missing} do not exist: this {patch.model_type} model's convertible layers are "
                f"{eligible[0]}-{eligible[-1]}"
            )
        layers = tuple(i for i in layers if i in eligible)

    max_length = patch.max_length(model.config)
    block_size = auto_block_size(max_length) if resolved.block_size == "auto" else resolved.block_size
    settings = replace(resolved, block_size=block_size, layers=layers)

    # Everything is decided before anything is changed, so that a failure leaves the model as it was.
    records, to_convert = [], []
    for name, module in modules:
        layer = layer_index(name)
        reason = reasons[name]
        if reason is None and layers != "all" and layer not in layers:
            reason = "layer not selected"
        if reason is None:
            to_convert.append((name, module))
        records.append(
            ModuleRecord(
                name=name,
                layer=layer,
                status="skipped" if reason else "converted",
                reason=reason,
                num_heads=_first_attr(module, ("num_heads", "num_attention_heads")),
                head_dim=_first_attr(module, ("head_dim", "attention_head_size")),
            )
        )

    if state is not None:
        revert(model)
    converted, configs = [], {}
    for name, module in to_convert:
        setattr(module, SPEC_ATTR, MonarchSpec(block_size, settings.num_steps, settings.pad_type, settings.backend, name))
        converted.append(module)
        configs.setdefault(id(module.config), module.config)

    bases = []
    for cfg in configs.values():
        current = cfg._attn_implementation
        base = base_implementation(current) if is_monarch_implementation(current) else current
        # Set the internal field: the public setter would also walk sub-configs, which we leave alone.
        cfg._attn_implementation_internal = ensure_registered(base)
        bases.append((cfg, base))

    from . import __version__

    setattr(model.config, CONFIG_KEY, {"monarch_convert_version": __version__, "settings": settings.to_dict()})
    setattr(model, STATE_ATTR, _State(patch.model_type, settings, max_length, records, converted, bases))
    if not converted:
        reasons_seen = sorted({r.reason for r in records if r.reason})
        warnings.warn(
            f"no attention module of this {patch.model_type} model was converted ({'; '.join(reasons_seen)})",
            stacklevel=2,
        )
    return model


def revert(model: Any) -> Any:
    """Undo :func:`convert` in place (outputs bit-identical to before); returns ``model``.
    A model that is not converted is returned unchanged."""
    state: _State | None = getattr(model, STATE_ATTR, None)
    if state is None:
        return model
    for module in state.converted:
        if SPEC_ATTR in module.__dict__:
            delattr(module, SPEC_ATTR)
    for cfg, base in state.bases:
        cfg._attn_implementation_internal = base
    if hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    delattr(model, STATE_ATTR)
    return model


@contextmanager
def softmax(model: Any) -> Iterator[Any]:
    """Run ``model`` on softmax attention inside the ``with`` block, then convert it back with the
    same settings (``revert`` is bit-identical, so the softmax outputs are the original model's).
    A model that is not converted is left as it is.

        with monarch_convert.softmax(model):
            reference = model(**inputs)
    """
    state: _State | None = getattr(model, STATE_ATTR, None)
    if state is None:
        yield model
        return
    revert(model)
    try:
        yield model
    finally:
        convert(model, state.settings)


def is_converted(model: Any) -> bool:
    return getattr(model, STATE_ATTR, None) is not None


def conversion_report(model: Any, seq_len: int | None = None) -> ConversionReport:
    """The :class:`ConversionReport` of a converted model; FLOPs at ``seq_len`` (default: the
    model's maximum sequence length, the one ``block_size="auto"`` is computed from)."""
    state: _State | None = getattr(model, STATE_ATTR, None)
    if state is None:
        raise MonarchConvertError("the model is not converted: call monarch_convert.convert(model) first")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise MonarchConvertError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    return ConversionReport(
        model_type=state.model_type,
        source_model=getattr(model.config, "name_or_path", None) or None,
        settings=state.settings,
        modules=tuple(state.records),
        seq_len=seq_len or state.max_length,
        max_length=state.max_length,
    )
