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
}


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
    """

    block_size: BlockSize | None = None
    num_steps: int | None = None
    pad_type: str | None = None
    layers: Layers | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.layers is not None and self.layers != "all":
            if isinstance(self.layers, (str, int)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layers
            ):
                raise ValueError(f"layers must be 'all' or a list of layer indices >= 0, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        bs = self.block_size
        if bs is not None and bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ValueError(f"block_size must be an integer >= 1 or 'auto', got {bs!r}")
        # Any block at least as long as a sequence runs as one block of that length (exact softmax),
        # so only values no int64 holds (the op's argument, the saved config) are refused.
        if isinstance(bs, int) and bs > MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be at most {MAX_BLOCK_SIZE} (a block as long as the sequence is "
                             f"already exact softmax attention), got {bs}")
        ns = self.num_steps
        if ns is not None and (isinstance(ns, bool) or not isinstance(ns, int) or ns < 1):
            raise ValueError(f"num_steps must be an integer >= 1, got {ns!r}")
        if self.pad_type is not None and self.pad_type not in PAD_TYPES:
            raise ValueError(f"pad_type must be one of {PAD_TYPES}, got {self.pad_type!r}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def merged(self, other: "MonarchConfig | dict[str, Any] | None" = None, **overrides: Any) -> "MonarchConfig":
        """A copy where the fields set in ``other`` and then ``overrides`` win over this one's."""
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["layers"], tuple):
            d["layers"] = list(d["layers"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MonarchConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown MonarchConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------
# Settings written as text (the CLI's options, the evaluator's --setting, the scripts' sweeps)

# Short keys of ``parse_setting``: "b=16,T=2".
_SETTING_ALIASES = {"b": "block_size", "T": "num_steps"}


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


def parse_setting(text: str) -> dict[str, Any]:
    """'block_size=16,num_steps=2,pad_type=pre,layers=0-3+8-11' (or 'b=16,T=2') -> a
    :class:`MonarchConfig` dict."""
    out: dict[str, Any] = {}
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        key = _SETTING_ALIASES.get(key, key.replace("-", "_"))
        if not eq or not value:
            raise ValueError(f"--setting expects KEY=VALUE pairs, got {part!r}")
        if key == "block_size":
            out[key] = parse_block_size(value)
        elif key == "num_steps":
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"num_steps must be an integer, got {value!r}") from None
        elif key == "layers":
            out[key] = parse_layers(value.replace("+", ","))
        elif key in ("pad_type", "backend"):
            out[key] = value
        else:
            raise ValueError(f"unknown setting {key!r} (block_size, num_steps, pad_type, layers, backend)")
    return out
