"""Sequence-to-sequence models beyond BART (``mbart``, ``marian``, ``pegasus``): as BART, only the
encoder's self-attention is converted; the decoder's self-attention is causal (``is_causal``) and
its ``encoder_attn`` is cross-attention, both left exactly as they were."""

from . import inputs
from .base import ArchitecturePatch, text_max_length


def _encoder_decoder(model_type: str, prefix: str) -> ArchitecturePatch:
    return ArchitecturePatch(
        model_type,
        (f"{prefix}Attention",),
        text_max_length(),
        cross_attention=("encoder_attn",),
        dummy_inputs=inputs.seq2seq_text,
    )


PATCHES = (
    _encoder_decoder("mbart", "MBart"),
    _encoder_decoder("marian", "Marian"),
    _encoder_decoder("pegasus", "Pegasus"),
)
