"""BERT (and BERT-architecture checkpoints such as all-MiniLM-L6-v2).

Encoder self-attention is converted; a BERT used as a decoder (``is_decoder``: causal) and its
cross-attention (``add_cross_attention``) are left on softmax.
"""

from .registry import ArchitecturePatch, text_max_length


def _attention_bias(config) -> str | None:
    # transformers < 5 offered relative-position attention scores; 5.x removed them.
    kind = getattr(config, "position_embedding_type", "absolute") or "absolute"
    if kind != "absolute":
        return f"position_embedding_type={kind!r} adds a relative-position bias to the scores"
    return None


PATCH = ArchitecturePatch(
    model_type="bert",
    attention_classes=("BertSelfAttention", "BertCrossAttention"),
    cross_attention=("crossattention",),
    max_length=text_max_length(),
    attention_bias=_attention_bias,
)
