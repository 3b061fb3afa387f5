"""RoBERTa: as BERT. Positions start after ``pad_token_id``, so 514 position embeddings hold
sequences of 512 tokens. Preset (configs/roberta.json): layers 0-3 and 8-11, as in the paper's
SQuAD experiment (layers a smaller model lacks are ignored)."""

from .base import ArchitecturePatch, absolute_positions_only, roberta_max_length

PATCH = ArchitecturePatch(
    model_type="roberta",
    attention_classes=("RobertaSelfAttention", "RobertaCrossAttention"),
    cross_attention=("crossattention",),
    max_length=roberta_max_length,
    attention_bias=absolute_positions_only,
    output_projection=("../output.dense",),
)
