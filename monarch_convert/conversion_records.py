"""What ``convert`` did: one :class:`ModuleRecord` per attention module, and the
:class:`ConversionReport` that ``conversion_report(model)`` returns (the CLI's ``conversion.json``).

(Not ``conversion_report.py``: importing a submodule of that name would replace the function
``monarch_convert.conversion_report`` with the module.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import __version__
from .config import MonarchConfig
from .flops import format_flops, monarch_attention_flops, softmax_attention_flops


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


@dataclass(frozen=True)
class ConversionReport:
    """What ``convert`` did: settings, modules converted or skipped (and why), attention FLOPs.

    ``to_dict()`` is the ``conversion.json`` the CLI writes; ``format_table()`` its summary.
    FLOPs count the attention products (q k^T and A v for softmax; section 3's formula for
    Monarch) of every attention module listed, at query and key length ``seq_len``, for one
    sequence with all heads; modules left on softmax count at softmax cost in both columns. A
    block longer than ``seq_len`` is counted as ``b = seq_len``: the op runs it so.
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
            monarch += self.module_flops(r) if r.status == "converted" else dense
        return {"seq_len": n, "softmax": softmax, "monarch": monarch, "ratio": monarch / softmax if softmax else 1.0}

    def module_flops(self, record: ModuleRecord) -> int:
        """Attention FLOPs of a converted module at ``seq_len``, with its layer's own settings."""
        own = self.settings.for_layer(record.layer)
        return monarch_attention_flops(
            self.seq_len, record.head_dim, own.block_size, own.num_steps, record.num_heads,
            exact_diagonal=own.exact_diagonal, global_keys=own.global_keys,
        )

    def to_dict(self) -> dict[str, Any]:
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
            f"layers={layers} backend={s.backend}{_variants(s.exact_diagonal, s.global_keys)}",
        ]
        lines += [f"  layer {i}: {_format_layer_setting(own)}" for i, own in s.layer_settings or ()]
        lines.append(f"attention modules: {len(self.converted)} converted, {len(self.skipped)} skipped")
        width = max([len("module")] + [len(r.name) for r in self.modules])
        lines.append(f"  {'module':<{width}}  {'layer':>5}  {'status':<9}  reason")
        for r in self.modules:
            layer = "-" if r.layer is None else str(r.layer)
            lines.append(f"  {r.name:<{width}}  {layer:>5}  {r.status:<9}  {r.reason or ''}".rstrip())
        f = self.attention_flops
        # A block at least as long as the sequence runs as one block of it (exact softmax), and is counted so.
        longest = max([s.block_size] + [own.block_size or 0 for _, own in s.layer_settings or ()])
        capped = f" (block_size runs as {f['seq_len']}: exact softmax)" if longest > f["seq_len"] else ""
        lines.append(
            f"attention FLOPs at seq_len={f['seq_len']}{capped}: softmax {format_flops(f['softmax'])} -> "
            f"monarch {format_flops(f['monarch'])} ({100 * f['ratio']:.1f}%)"
        )
        return "\n".join(lines)


def _variants(exact_diagonal: bool | None, global_keys: int | None) -> str:
    return (" exact_diagonal" if exact_diagonal else "") + (f" global_keys={global_keys}" if global_keys else "")


def _format_layer_setting(own: Any) -> str:
    """A layer's own settings as the table shows them: ``block_size=16 num_steps=2 exact_diagonal``."""
    sizes = " ".join(f"{k}={getattr(own, k)}" for k in ("block_size", "num_steps") if getattr(own, k) is not None)
    flags = {True: " exact_diagonal", False: " exact_diagonal=False", None: ""}[own.exact_diagonal]
    keys = "" if own.global_keys is None else f" global_keys={own.global_keys}"
    return (sizes + flags + keys).strip()
