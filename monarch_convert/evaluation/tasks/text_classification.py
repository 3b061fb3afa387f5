"""Text classification: accuracy and macro F1 of an ``AutoModelForSequenceClassification``."""

from __future__ import annotations

from typing import Any

from ..metrics import classification_metrics
from .base import Batch, ClassificationTask, Options, tokenized_batches


class TextClassification(ClassificationTask):
    name = "text-classification"
    description = "accuracy, macro F1"
    mapping = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
    auto_class = "AutoModelForSequenceClassification"
    head = "sequence-classification head"
    roles = {
        "text": ("text", "sentence", "sentence1", "content", "review", "document"),
        "text_pair": ("text_pair", "sentence2"),
        "label": ("label", "labels", "class"),
    }
    required = ("text", "label")
    text_roles = ("text", "text_pair")

    def is_head_key(self, key: str) -> bool:
        return key.startswith(("classifier", "score", "pre_classifier", "classification_head"))

    def make_batches(self, ds: Any, cols: dict[str, str], processor: Any, model: Any, opts: Options) -> list[Batch]:
        texts = [str(t) for t in ds[cols["text"]]]
        pairs = [str(t) for t in ds[cols["text_pair"]]] if "text_pair" in cols else None
        return tokenized_batches(texts, processor, model, opts, pairs)

    def forward(self, model: Any, batch: Batch, inputs: dict, opts: Options) -> dict:
        return {"logits": model(**inputs).logits.float().cpu()}

    def compute_metrics(self, predictions: list, references: list, opts: Options) -> dict[str, tuple[float, str]]:
        import torch

        return classification_metrics(torch.stack(predictions), references, top_k=(1,), f1=True,
                                      source=opts.metric_source)
