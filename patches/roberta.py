"""RoBERTa: as BERT. Positions start after ``pad_token_id``, so 514 position embeddings hold
sequences of 512 tokens. Preset (configs/roberta.json): layers 0-3 and 8-11, as in the paper's
SQuAD experiment (layers a smaller model lacks are ignored)."""

from typing import Any

from .base import ArchitecturePatch, absolute_positions_only


def _max_length(config: Any) -> int:
    return int(config.max_position_embeddings) - int(config.pad_token_id or 0) - 1


PATCH = ArchitecturePatch(
    model_type="roberta",
    attention_classes=("RobertaSelfAttention", "RobertaCrossAttention"),
    cross_attention=("crossattention",),
    max_length=_max_length,
    attention_bias=absolute_positions_only,
    output_projection=("../output.dense",),
)
