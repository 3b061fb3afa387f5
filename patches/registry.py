"""The per-architecture patchers, keyed by ``config.model_type``.

A patcher (:class:`~monarch_convert.patches.base.ArchitecturePatch`) is data: which module
classes call transformers' attention interface, which are cross-attention, how long the
sequences can be. The one mechanism that acts on it lives in
:mod:`monarch_convert.patches.dispatch` (the registered ``monarch_*`` attention and mask
functions) and :mod:`monarch_convert.conversion_plan` (which chooses the modules to convert).

Adding an architecture is one :class:`ArchitecturePatch` (in its own module, or in the family
module it belongs to) listed below, and one entry in ``tests/architectures.py``, as long as its
attention modules call
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``
and its masks come from ``masking_utils.create_bidirectional_mask`` / ``create_causal_mask``:
README.md, "Adding an architecture", says how, step by step.
"""

from __future__ import annotations

from . import audio_video, bart, bert, roberta, seq2seq, text_encoders, vision, vit
from .base import ArchitecturePatch

ADDING_ONE = "README.md, section 'Adding an architecture'"

PATCHES: dict[str, ArchitecturePatch] = {
    patch.model_type: patch
    for patch in (
        bart.PATCH,
        bert.PATCH,
        roberta.PATCH,
        vit.PATCH,
        *text_encoders.PATCHES,
        *vision.PATCHES,
        *audio_video.PATCHES,
        *seq2seq.PATCHES,
    )
}


def supported_model_types() -> list[str]:
    return sorted(PATCHES)


def get_patch(model_type: str | None) -> ArchitecturePatch | None:
    return PATCHES.get(model_type or "")


def unsupported_message(model_type: str | None) -> str:
    """The one line for a ``model_type`` with no patcher."""
    return (
        f"unsupported model type {model_type!r}: monarch-convert supports {', '.join(supported_model_types())} "
        f"(to add one, see {ADDING_ONE})"
    )
