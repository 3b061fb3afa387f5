"""The per-architecture patchers, keyed by ``config.model_type``.

A patcher (:class:`~monarch_convert.patches.base.ArchitecturePatch`) is data: which module
classes call transformers' attention interface, which are cross-attention, how long the
sequences can be. The one mechanism that acts on it lives in
:mod:`monarch_convert.patches.dispatch` (the registered ``monarch_*`` attention and mask
functions) and :mod:`monarch_convert.conversion_plan` (which chooses the modules to convert).

Adding an architecture is one small module in this folder that defines ``PATCH`` with the
helpers of ``base.py``, and one entry in ``PATCHES`` below, as long as its attention modules call
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``
and its masks come from ``masking_utils.create_bidirectional_mask`` / ``create_causal_mask``.
"""

from __future__ import annotations

from . import bart, bert, roberta, vit
from .base import ArchitecturePatch

PATCHES: dict[str, ArchitecturePatch] = {
    "bart": bart.PATCH,
    "bert": bert.PATCH,
    "roberta": roberta.PATCH,
    "vit": vit.PATCH,
}


def supported_model_types() -> list[str]:
    return sorted(PATCHES)


def get_patch(model_type: str | None) -> ArchitecturePatch | None:
    return PATCHES.get(model_type or "")
