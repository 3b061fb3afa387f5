"""The per-architecture patchers, keyed by ``config.model_type``.

A patcher is data, not code: an :class:`ArchitecturePatch` says which module classes call
transformers' attention interface, which of them are cross-attention, how long the model's
sequences can be, and (optionally) which configs add an attention bias. The one mechanism that
acts on it lives in :mod:`monarch_convert.patches.dispatch` (the registered ``monarch_*`` attention
and mask functions) and :mod:`monarch_convert.conversion` (which marks the modules to convert).

Adding an architecture is one small module in this folder with a ``PATCH`` and one line in
``_MODULES`` below, as long as its attention modules call
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``
and its masks come from ``masking_utils.create_bidirectional_mask`` / ``create_causal_mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable

# Modules of this package that hold one ``PATCH`` each.
_MODULES = ("vit", "bert", "roberta", "bart")


@dataclass(frozen=True)
class ArchitecturePatch:
    """What the converter needs to know about one architecture.

    model_type: ``config.model_type`` this applies to.
    attention_classes: names of the module classes whose ``forward`` calls the attention interface
        (the module passed as its first argument). Names that a given transformers version lacks
        are ignored; when a listed class wraps another listed class, only the innermost counts.
    cross_attention: attribute names (components of a module's dotted name) under which a module
        is cross-attention (queries from one sequence, keys from another): never converted.
    max_length: the longest sequence the model takes, from its config (sets ``block_size="auto"``
        and the default sequence length of the FLOPs report).
    attention_bias: from the config, why its self-attention would need more than a key-padding
        mask (relative-position bias and the like), or ``None``; such modules are not converted.
    """

    model_type: str
    attention_classes: tuple[str, ...]
    max_length: Callable[[Any], int]
    cross_attention: tuple[str, ...] = ()
    attention_bias: Callable[[Any], str | None] = field(default=lambda config: None)

    def classify(self, name: str, module: Any, config: Any) -> str | None:
        """Why the attention module called ``name`` cannot be converted, or ``None`` if it can."""
        parts = set(name.split("."))
        if parts & set(self.cross_attention):
            return "cross-attention (keys come from another sequence)"
        if getattr(module, "is_causal", False):
            return "causal self-attention (needs a causal mask, not a key-padding mask)"
        bias = self.attention_bias(config)
        if bias:
            return bias
        return None


def text_max_length(position_offset: int = 0) -> Callable[[Any], int]:
    """Text models: ``max_position_embeddings`` minus the positions the embedding reserves
    (RoBERTa's positions start after ``pad_token_id``: 514 -> 512)."""

    def max_length(config: Any) -> int:
        return int(config.max_position_embeddings) - position_offset

    return max_length


def vision_max_length(extra_tokens: int = 1) -> Callable[[Any], int]:
    """Vision transformers: ``(image_size / patch_size) ** 2`` patches plus the class token(s)
    (ViT-B/16 at 224 px: 197)."""

    def max_length(config: Any) -> int:
        size = config.image_size if isinstance(config.image_size, (list, tuple)) else (config.image_size,) * 2
        patch = config.patch_size if isinstance(config.patch_size, (list, tuple)) else (config.patch_size,) * 2
        return math.prod(s // p for s, p in zip(size, patch)) + extra_tokens

    return max_length


_REGISTRY: dict[str, ArchitecturePatch] | None = None


def registry() -> dict[str, ArchitecturePatch]:
    global _REGISTRY
    if _REGISTRY is None:
        patches = [import_module(f"{__package__}.{name}").PATCH for name in _MODULES]
        _REGISTRY = {p.model_type: p for p in patches}
    return _REGISTRY


def supported_model_types() -> list[str]:
    return sorted(registry())


def get_patch(model_type: str | None) -> ArchitecturePatch | None:
    return registry().get(model_type or "")


def layer_index(name: str) -> int | None:
    """The layer a module sits in: the last integer component of its dotted name."""
    numbers = [int(p) for p in name.split(".") if p.isdigit()]
    return numbers[-1] if numbers else None
