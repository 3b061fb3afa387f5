"""Task metrics by name: the Hub's ``evaluate`` module when it can be loaded (users online get
every Hub metric), else offline implementations from maintained libraries (``torchmetrics``,
``rouge-score``, ``scikit-learn``) that give the same numbers. Nothing here re-implements a metric.

Every metric returns ``{name: value}``; accuracy-like scores are reported in percent (like the
paper's tables), cosine similarities as they are.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

from ..errors import MonarchConvertError

METRIC_SOURCES = ("auto", "offline", "hub")


def hub_allowed(source: str) -> bool:
    """``auto`` tries the Hub unless the environment says offline; ``offline`` never does."""
    if source not in METRIC_SOURCES:
        raise MonarchConvertError(f"metric source must be one of {', '.join(METRIC_SOURCES)}, got {source!r}")
    if source == "offline":
        return False
    if source == "hub":
        return True
    offline_flags = ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE")
    return not any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in offline_flags)


def load_hub_metric(name: str, source: str) -> Any:
    """``evaluate.load(name)`` or None (offline, or the module cannot be fetched)."""
    if not hub_allowed(source):
        return None
    return _load_hub_metric(name, source)


@functools.lru_cache(maxsize=None)
def _load_hub_metric(name: str, source: str):
    try:
        import evaluate

        return evaluate.load(name)
    except Exception as exc:  # any failure means: use the offline implementation
        if source == "hub":
            first = str(exc).splitlines()[0]
            raise MonarchConvertError(f"could not load metric {name!r} through evaluate: {first}") from exc
        return None


# ---------------------------------------------------------------- classification (logits, labels)


def classification_metrics(logits: Any, labels: Any, *, top_k: Sequence[int] = (1,), f1: bool = False,
                           source: str = "offline") -> dict[str, tuple[float, str]]:
    """Top-k accuracies (percent) and optionally macro F1 (percent) of ``logits`` (n, C) vs ``labels``."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    logits = torch.as_tensor(logits).float()
    labels = torch.as_tensor(labels).long()
    num_classes = logits.shape[-1]
    preds = logits.argmax(-1)
    out: dict[str, tuple[float, str]] = {}
    for k in top_k:
        k_eff = min(k, num_classes)
        name = "accuracy" if k == 1 else f"top{k}_accuracy"
        hub = load_hub_metric("accuracy", source) if k == 1 else None
        if hub is not None:
            value = hub.compute(predictions=preds.tolist(), references=labels.tolist())["accuracy"]
            out[name] = (100.0 * float(value), "evaluate:accuracy")
        else:
            value = multiclass_accuracy(logits, labels, num_classes=num_classes, top_k=k_eff, average="micro")
            out[name] = (100.0 * float(value), "torchmetrics")
    if f1:
        hub = load_hub_metric("f1", source)
        if hub is not None:
            value = hub.compute(predictions=preds.tolist(), references=labels.tolist(), average="macro")["f1"]
            out["macro_f1"] = (100.0 * float(value), "evaluate:f1")
        else:
            value = multiclass_f1_score(preds, labels, num_classes=num_classes, average="macro")
            out["macro_f1"] = (100.0 * float(value), "torchmetrics")
    return out


# --------------------------------------------------------------------------------- SQuAD EM / F1


def squad_metrics(predictions: Sequence[dict], references: Sequence[dict], *,
                  source: str = "offline") -> dict[str, tuple[float, str]]:
    """SQuAD v1 exact match and F1 (percent). predictions: {"id", "prediction_text"};
    references: {"id", "answers": {"text": [...], "answer_start": [...]}}."""
    hub = load_hub_metric("squad", source)
    if hub is not None:
        res = hub.compute(predictions=list(predictions), references=list(references))
        return {k: (float(res[k]), "evaluate:squad") for k in ("exact_match", "f1")}
    from torchmetrics.functional.text import squad

    res = squad(list(predictions), list(references))
    return {"exact_match": (float(res["exact_match"]), "torchmetrics"), "f1": (float(res["f1"]), "torchmetrics")}


# ------------------------------------------------------------------------------------------ ROUGE

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_metrics(predictions: Sequence[str], references: Sequence[str], *,
                  source: str = "offline") -> dict[str, tuple[float, str]]:
    """ROUGE-1/2/L/Lsum F-measure (percent), mean over examples. ROUGE-Lsum splits summaries into
    sentences at newlines (as ``evaluate``'s rouge does)."""
    hub = load_hub_metric("rouge", source)
    if hub is not None:
        res = hub.compute(predictions=list(predictions), references=list(references), rouge_types=list(ROUGE_TYPES),
                          use_aggregator=False)
        return {t: (100.0 * sum(res[t]) / max(1, len(res[t])), "evaluate:rouge") for t in ROUGE_TYPES}
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    n = max(1, len(predictions))
    return {t: (100.0 * totals[t] / n, "rouge-score") for t in ROUGE_TYPES}


# --------------------------------------------------------------------------- linear probe accuracy


def fit_linear_probe(features: Any, labels: Any, seed: int | None = 0) -> Any:
    """A logistic-regression probe (scikit-learn) fitted on ``features`` (n, d)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    if len(set(labels.tolist())) < 2:
        raise MonarchConvertError("the linear probe needs at least two classes in its train split")
    probe = LogisticRegression(max_iter=2000, random_state=0 if seed is None else seed)
    probe.fit(np.asarray(features, dtype=np.float64), labels)
    return probe


def probe_accuracy(probe: Any, features: Any, labels: Any) -> float:
    import numpy as np
    from sklearn.metrics import accuracy_score

    return 100.0 * float(accuracy_score(np.asarray(labels), probe.predict(np.asarray(features, dtype=np.float64))))


# ------------------------------------------------------------------------- extra metrics by name


def extra_hub_metric(name: str, predictions: list, references: list, source: str) -> dict[str, tuple[float, str]]:
    """Any other metric by name, through ``evaluate`` only (its numeric outputs, prefixed)."""
    if not hub_allowed(source):
        raise MonarchConvertError(
            f"metric {name!r} has no offline implementation here; it needs the Hub (unset HF_HUB_OFFLINE, "
            "or drop it)"
        )
    metric = load_hub_metric(name, "hub")
    res = metric.compute(predictions=predictions, references=references)
    out = {}
    for key, value in res.items():
        if isinstance(value, (int, float)):
            out[key if key.startswith(name) else f"{name}_{key}"] = (float(value), f"evaluate:{name}")
    return out

