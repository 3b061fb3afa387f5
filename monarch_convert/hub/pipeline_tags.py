"""The Hub ``pipeline_tag`` of a converted model, from its ``architectures`` and ``model_type``.

transformers names a model class ``<Model><Head>`` (``BertForSequenceClassification``,
``ViTForImageClassification``, ``BertModel``), so the head's suffix gives the tag for any
architecture and a new one needs no entry here. Listed by model type are only the exceptions
among the types monarch-convert supports (``patches/registry.py``).
"""

from __future__ import annotations

from typing import Optional, Sequence

# Head class-name suffix -> the tag of that head, for every architecture.
HEAD_TAGS: dict[str, str] = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMultipleChoice": "multiple-choice",
    "ForMaskedLM": "fill-mask",
    "ForCausalLM": "text-generation",
    "ForConditionalGeneration": "text2text-generation",
    "ForImageClassification": "image-classification",
    "ForMaskedImageModeling": "image-feature-extraction",
    "ForSemanticSegmentation": "image-segmentation",
    "ForObjectDetection": "object-detection",
    "ForAudioClassification": "audio-classification",
}

# (model_type, head suffix) -> tag, where a type's checkpoints are known on the Hub by another
# task than the head's: BART's sequence-to-sequence checkpoints are summarizers (bart-large-cnn).
MODEL_TYPE_TAGS: dict[tuple[str, str], str] = {
    ("bart", "ForConditionalGeneration"): "summarization",
}

# A bare encoder (``BertModel``, ``ViTModel``) extracts features; the class name does not say of
# what, so the vision types are listed (a new vision architecture joins them).
VISION_MODEL_TYPES = frozenset({"vit"})

# Tags the Hub knows as pipeline tags (also used to tell a task id from a free-form task name).
KNOWN_PIPELINE_TAGS = (
    frozenset(HEAD_TAGS.values())
    | frozenset(MODEL_TYPE_TAGS.values())
    | {"feature-extraction", "image-feature-extraction", "sentence-similarity", "translation",
       "zero-shot-classification"}
)


def infer_pipeline_tag(architectures: Optional[Sequence[str]], model_type: Optional[str]) -> Optional[str]:
    """The Hub pipeline tag for a model, from its ``architectures`` and ``model_type``; None if unknown.

    A head anywhere in ``architectures`` wins over a bare encoder."""
    model_type = (model_type or "").lower()
    architectures = architectures or []
    for arch in architectures:
        for suffix, tag in HEAD_TAGS.items():
            if arch.endswith(suffix):
                return MODEL_TYPE_TAGS.get((model_type, suffix), tag)
    if any(arch.endswith("Model") and not arch.endswith("PreTrainedModel") for arch in architectures):
        return "image-feature-extraction" if model_type in VISION_MODEL_TYPES else "feature-extraction"
    return None
