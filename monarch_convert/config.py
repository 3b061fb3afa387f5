"""``MonarchConfig``: the conversion settings, their validation, and how presets fill them."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from typing import Any, Literal, Union

from .kernels.options import BACKENDS, MAX_BLOCK_SIZE, PAD_TYPES

# Used for a field that neither the user nor the architecture's preset sets.
DEFAULTS: dict[str, Any] = {
    "block_size": "auto",
    "num_steps": 1,
    "pad_type": "post",
    "layers": "all",
    "backend": "auto",
    "exact_diagonal": False,
    "global_keys": 0,
}

# The settings one layer may set for itself (``MonarchConfig.layer_settings``); the others are global.
LAYER_FIELDS = ("block_size", "num_steps", "exact_diagonal", "global_keys")


def load_preset(model_type: str) -> dict[str, Any]:
    """The architecture's preset from ``monarch_convert/configs/<model_type>.json`` (keys starting
    with ``_`` are comments), or ``{}``."""
    path = resources.files("monarch_convert.configs").joinpath(f"{model_type}.json")
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def auto_block_size(max_seq_len: int) -> int:
    """The block size ``block_size="auto"`` stands for: ``ceil(sqrt(N))`` for the model's longest
    sequence N, so that blocks and block count are both about sqrt(N) (the cheapest Monarch
    factorisation, docs/algorithm.md, section 3). N comes from the architecture's patcher
    (``patches/<model_type>.py``): ViT ``(image_size / patch_size) ** 2 + 1`` (197 for ViT-B/16 at
    224 px, giving 15), text models ``max_position_embeddings`` less any reserved positions
    (BERT 512 -> 23, RoBERTa 514 - 2 = 512 -> 23, BART 1024 -> 32). It is fixed at conversion time,
    never per batch, so that outputs never depend on padding or batch composition.
    """
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise ValueError(f"max_seq_len must be an integer >= 1, got {max_seq_len!r}")
    return max(1, math.isqrt(max_seq_len - 1) + 1) if max_seq_len > 1 else 1


BlockSize = Union[int, Literal["auto"]]
Layers = Union[Literal["all"], tuple[int, ...]]


def _check_block_size(bs: Any, allow_auto: bool = True) -> None:
    if bs is None or (allow_auto and bs == "auto"):
        return
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ValueError(f"block_size must be an integer >= 1{' or auto' if allow_auto else ''}, got {bs!r}")
    # Any block at least as long as a sequence runs as one block of that length (exact softmax),
    # so only values no int64 holds (the op's argument, the saved config) are refused.
    if bs > MAX_BLOCK_SIZE:
        raise ValueError(f"block_size must be at most {MAX_BLOCK_SIZE} (a block as long as the sequence is "
                         f"already exact softmax attention), got {bs}")


def _check_int(name: str, value: Any, least: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _check_variant_fields(obj: Any) -> None:
    """The checks of the fields a layer may set for itself (``LAYER_FIELDS``)."""
    _check_int("num_steps", obj.num_steps, 1)
    _check_bool("exact_diagonal", obj.exact_diagonal)
    _check_int("global_keys", obj.global_keys, 0)


@dataclass(frozen=True)
class LayerSetting:
    """One layer's own settings; a field left ``None`` is the model's global one.

    block_size, num_steps: as :class:`MonarchConfig` (an integer block size: no ``"auto"``).
    exact_diagonal: each query's own block keeps its exact softmax at every step
        (docs/algorithm.md, variants); identical to the published algorithm at ``num_steps=1``.
    global_keys: keys per head attended exactly, as extra columns (docs/algorithm.md, variants).
    """

    block_size: int | None = None
    num_steps: int | None = None
    exact_diagonal: bool | None = None
    global_keys: int | None = None

    def __post_init__(self) -> None:
        _check_block_size(self.block_size, allow_auto=False)
        _check_variant_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _layer_settings(value: Any) -> tuple[tuple[int, LayerSetting], ...] | None:
    """``{layer: LayerSetting or dict}`` (layer an int, or its text as JSON keys are) as sorted pairs."""
    if value is None:
        return None
    items = value.items() if isinstance(value, dict) else value
    out: dict[int, LayerSetting] = {}
    for layer, setting in items:
        index = int(layer) if isinstance(layer, str) and layer.isdigit() else layer
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"layer_settings keys must be layer indices >= 0, got {layer!r}")
        if isinstance(setting, dict):
            unknown = set(setting) - set(LAYER_FIELDS)
            if unknown:
                raise ValueError(f"a layer may set only {', '.join(LAYER_FIELDS)}, got {', '.join(sorted(unknown))}")
            setting = LayerSetting(**setting)
        if not isinstance(setting, LayerSetting):
            raise ValueError(f"layer_settings[{index}] must be a LayerSetting or a dict, got {type(setting).__name__}")
        out[index] = setting
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class MonarchConfig:
    """Conversion settings. A field left as ``None`` is taken from the architecture's preset
    (``monarch_convert/configs/<model_type>.json``), then from ``DEFAULTS``.

    block_size: Monarch block size, or ``"auto"``: ``ceil(sqrt(N))`` for the model's maximum
        sequence length N, fixed at conversion time (so that outputs never depend on padding);
        see :func:`auto_block_size` for how N is read from each architecture's config. A block
        longer than a sequence runs as one block of the sequence's length: exact softmax attention.
    num_steps: alternating (R, L) update pairs.
    pad_type: ``"post"`` or ``"pre"``: where each sequence is padded up to a multiple of the block.
    layers: ``"all"`` or the indices of the layers to convert.
    backend: ``"auto"`` (Triton on CUDA, PyTorch elsewhere), ``"torch"`` or ``"triton"``.
    exact_diagonal, global_keys: the op's variants (see :class:`LayerSetting`); default off.
    layer_settings: ``{layer: LayerSetting or dict}``, settings of single layers (block_size,
        num_steps, exact_diagonal, global_keys) over the global ones; entries of layers that are
        not converted are kept but unused. Stored as sorted ``(layer, LayerSetting)`` pairs.
    """

    block_size: BlockSize | None = None
    num_steps: int | None = None
    pad_type: str | None = None
    layers: Layers | None = None
    backend: str | None = None
    exact_diagonal: bool | None = None
    global_keys: int | None = None
    layer_settings: Any = None

    def __post_init__(self) -> None:
        if self.layers is not None and self.layers != "all":
            if isinstance(self.layers, (str, int)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layers
            ):
                raise ValueError(f"layers must be 'all' or a list of layer indices >= 0, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        _check_block_size(self.block_size)
        _check_variant_fields(self)
        if self.pad_type is not None and self.pad_type not in PAD_TYPES:
            raise ValueError(f"pad_type must be one of {PAD_TYPES}, got {self.pad_type!r}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        object.__setattr__(self, "layer_settings", _layer_settings(self.layer_settings))

    def merged(self, other: "MonarchConfig | dict[str, Any] | None" = None, **overrides: Any) -> "MonarchConfig":
        """A copy where the fields set in ``other`` and then ``overrides`` win over this one's
        (``layer_settings`` as a whole)."""
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown MonarchConfig field(s): {', '.join(sorted(unknown))}")
        layers = [other.to_dict() if isinstance(other, MonarchConfig) else dict(other or {}), overrides]
        out = self
        for layer in layers:
            out = replace(out, **{k: v for k, v in layer.items() if v is not None})
        return out

    def resolved(self, preset: dict[str, Any] | None = None) -> "MonarchConfig":
        """Every field set: this config's fields win over the preset's, which win over DEFAULTS."""
        return MonarchConfig(**DEFAULTS).merged(preset).merged(self)

    def for_layer(self, layer: int | None) -> LayerSetting:
        """The settings ``layer`` runs with: its own entry of ``layer_settings`` over the global
        fields (of a resolved config: every field set)."""
        own = dict(self.layer_settings or ()).get(layer, LayerSetting())
        return LayerSetting(**{k: getattr(self, k) if getattr(own, k) is None else getattr(own, k)
                               for k in LAYER_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(d["layers"], tuple):
            d["layers"] = list(d["layers"])
        if d["layer_settings"] is not None:
            d["layer_settings"] = {str(i): s.to_dict() for i, s in d["layer_settings"]}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MonarchConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown MonarchConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------
# Settings written as text (the CLI's options, the evaluator's --setting, the scripts' sweeps)

# Short keys of ``parse_setting``: "b=16,T=2,G=8,diag".
_SETTING_ALIASES = {"b": "block_size", "T": "num_steps", "G": "global_keys", "diag": "exact_diagonal"}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")

def parse_layers(text: str | None) -> Layers | list[int] | None:
    """'all', or comma-separated indices and ranges: '0-3,8-11'."""
    if text is None or text == "all":
        return text
    layers: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--layers must be 'all' or indices like '0-3,8-11', got {text!r}") from None
    return layers


def parse_block_size(text: str | None) -> BlockSize | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--block-size must be an integer or 'auto', got {text!r}") from None


def _setting_value(key: str, value: str) -> Any:
    """One setting's value, from its text."""
    if key == "block_size":
        return parse_block_size(value)
    if key in ("num_steps", "global_keys"):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if key == "exact_diagonal":
        if value.lower() not in _TRUE + _FALSE:
            raise ValueError(f"exact_diagonal must be true or false, got {value!r}")
        return value.lower() in _TRUE
    if key == "layers":
        return parse_layers(value.replace("+", ","))
    return value  # pad_type, backend: checked by MonarchConfig


def _parse_pairs(text: str, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """'b=16,T=2,diag' -> ``{"block_size": 16, "num_steps": 2, "exact_diagonal": True}``; a bare
    ``diag`` (``exact_diagonal``) means true."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        key = _SETTING_ALIASES.get(key, key.replace("-", "_"))
        if key not in allowed:
            raise ValueError(f"unknown setting {key!r} in {what} ({', '.join(allowed)})")
        if key == "exact_diagonal" and not eq:
            value, eq = "true", "="
        if not eq or not value:
            raise ValueError(f"{what} expects KEY=VALUE pairs, got {part!r}")
        out[key] = _setting_value(key, value)
    return out


def parse_setting(text: str) -> dict[str, Any]:
    """'block_size=16,num_steps=2,pad_type=pre,layers=0-3+8-11' (or 'b=16,T=2,G=8,diag') -> a
    :class:`MonarchConfig` dict."""
    allowed = ("block_size", "num_steps", "pad_type", "layers", "backend", "exact_diagonal", "global_keys")
    return _parse_pairs(text.replace(";", ","), allowed, "--setting")


def parse_layer_settings(text: str | None) -> dict[int, dict[str, Any]] | None:
    """Per-layer settings: 'LAYERS:SETTING;LAYERS:SETTING', LAYERS as ``--layers`` with '+' between
    ranges, SETTING as ``--setting`` limited to b, T, G and diag:
    '0-1:b=16,T=2;2-5:b=32,G=8,diag' -> ``{0: {"block_size": 16, "num_steps": 2}, ...}``."""
    if text is None:
        return None
    out: dict[int, dict[str, Any]] = {}
    for group in text.split(";"):
        if not group.strip():
            continue
        layers, colon, setting = group.partition(":")
        if not colon or not layers.strip():
            raise ValueError(f"--layer-settings expects LAYERS:SETTING groups like '0-1:b=16,T=2', got {group!r}")
        values = _parse_pairs(setting, LAYER_FIELDS, "--layer-settings")
        if not values:
            raise ValueError(f"--layer-settings group {group!r} sets nothing")
        try:
            indices = parse_layers(layers.strip().replace("+", ","))
        except ValueError:
            raise ValueError(f"--layer-settings layers must be indices like '0-3+8', got {layers!r}") from None
        if not isinstance(indices, list):  # 'all': that is what the global settings are for
            raise ValueError(f"--layer-settings names layers by index, got {layers.strip()!r}: use the global options")
        for i in indices:
            out.setdefault(i, {}).update(values)
    return out
