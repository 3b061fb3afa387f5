"""Text encoders beyond BERT and RoBERTa, each a few lines of data.

- BERT-family (``xlm-roberta``: BGE-M3 at 8192 tokens; ``camembert``, ``electra``, ``distilbert``,
  ``albert``): as BERT. ALBERT shares one attention module among all its layers: converting it
  converts every layer (``layers`` can only select the shared module, index 0).
- Rotary (``modernbert``, ``nomic_bert``, ``eurobert``): the rotation is applied to queries and
  keys before the attention function is called, so it needs no bias. ModernBERT's sliding-window
  layers (two of every three by default) stay on softmax; its global layers are converted.
  EuroBERT's grouped-query heads are repeated for MonarchAttention, as transformers' eager path does.
"""

from .base import ArchitecturePatch, absolute_positions_only, roberta_max_length, text_max_length


def _bert_like(model_type: str, prefix: str, max_length=text_max_length()) -> ArchitecturePatch:
    """A BERT-architecture model: ``<prefix>SelfAttention`` converted, ``<prefix>CrossAttention`` not."""
    return ArchitecturePatch(
        model_type=model_type,
        attention_classes=(f"{prefix}SelfAttention", f"{prefix}CrossAttention"),
        cross_attention=("crossattention",),
        max_length=max_length,
        attention_bias=absolute_positions_only,
        output_projection=("../output.dense",),
    )


PATCHES = (
    _bert_like("xlm-roberta", "XLMRoberta", roberta_max_length),
    _bert_like("camembert", "Camembert", roberta_max_length),
    _bert_like("electra", "Electra"),
    ArchitecturePatch("distilbert", ("DistilBertSelfAttention",), text_max_length(), output_projection=("out_lin",)),
    ArchitecturePatch("albert", ("AlbertAttention",), text_max_length(), output_projection=("dense",)),
    ArchitecturePatch("modernbert", ("ModernBertAttention",), text_max_length(), output_projection=("Wo",)),
    ArchitecturePatch("nomic_bert", ("NomicBertAttention",), text_max_length(), output_projection=("o_proj",)),
    ArchitecturePatch("eurobert", ("EuroBertAttention",), text_max_length(), output_projection=("o_proj",)),
)
