"""BERT (and BERT-architecture checkpoints such as all-MiniLM-L6-v2).

Encoder self-attention is converted; a BERT used as a decoder (``is_decoder``: causal) and its
cross-attention (``add_cross_attention``) are left on softmax.
"""

from .base import ArchitecturePatch, absolute_positions_only, text_max_length

PATCH = ArchitecturePatch(
    model_type="bert",
    attention_classes=("BertSelfAttention", "BertCrossAttention"),
    cross_attention=("crossattention",),
    max_length=text_max_length(),
    attention_bias=absolute_positions_only,
    output_projection=("../output.dense",),
)
