"""BART: only the encoder's self-attention is converted. The decoder's self-attention is causal
(``is_causal``) and its ``encoder_attn`` is cross-attention: both stay exactly as they were.
Preset (configs/bart.json): ``pre`` padding, as in the paper's BookSum experiment."""

from . import inputs
from .base import ArchitecturePatch, text_max_length

PATCH = ArchitecturePatch(
    model_type="bart",
    attention_classes=("BartAttention",),
    cross_attention=("encoder_attn",),
    max_length=text_max_length(),
    dummy_inputs=inputs.seq2seq_text,
    output_projection=("out_proj",),
)
