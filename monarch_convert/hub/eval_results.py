"""The card's ``model-index`` metadata (huggingface_hub ``EvalResult``s) from ``evaluation.json``,
and how the card names the evaluation's dataset."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from .pipeline_tags import KNOWN_PIPELINE_TAGS
from .public_names import base_name, is_local_path

# The evaluator's task names that are not Hub pipeline tags.
TASK_TYPE_ALIASES = {"sentence-embedding": "feature-extraction", "sequence-classification": "text-classification"}


class Dataset(NamedTuple):
    """The evaluation's dataset as the card names it; a local file by its name only."""

    id: Optional[str]
    name: Optional[str]
    config: Optional[str]
    split: Optional[str]


def dataset_fields(evaluation: dict) -> Dataset:
    """The evaluation's dataset, given in ``evaluation.json`` as a string or a dict."""
    dataset = evaluation.get("dataset")
    split = evaluation.get("split")
    if isinstance(dataset, dict):
        ident = dataset.get("id") or dataset.get("path") or dataset.get("name")
        name = dataset.get("name") or ident
        config = dataset.get("config")
        split = dataset.get("split") or split
    elif isinstance(dataset, str) and dataset.strip():
        ident = name = dataset.strip()
        config = None
    else:
        return Dataset(None, None, None, None)
    if ident and is_local_path(str(ident)):
        ident = base_name(str(ident))
        name = ident if name is None or is_local_path(str(name)) else name
    return Dataset(*(str(x) if x else None for x in (ident, name, config, split)))


def eval_results(evaluation: dict, pipeline_tag: Optional[str]) -> list:
    """One ``EvalResult`` per metric with a numeric converted value; none without a dataset or task."""
    from huggingface_hub import EvalResult

    dataset = dataset_fields(evaluation)
    task = evaluation.get("task")
    task_type = TASK_TYPE_ALIASES.get(task, task) if isinstance(task, str) else None
    if task_type not in KNOWN_PIPELINE_TAGS:
        task_type = pipeline_tag or task_type
    if not dataset.id or not task_type:
        return []
    return [
        EvalResult(
            task_type=task_type,
            task_name=str(task) if task else None,
            dataset_type=dataset.id,
            dataset_name=dataset.name or dataset.id,
            dataset_config=dataset.config,
            dataset_split=dataset.split,
            metric_type=str(metric["name"]).lower().replace(" ", "_"),
            metric_name=str(metric["name"]),
            metric_value=round(float(metric["converted"]), 6),
        )
        for metric in named_metrics(evaluation)
        if _is_number(metric.get("converted"))
    ]


def named_metrics(evaluation: dict) -> list[dict]:
    """The entries of ``evaluation.json``'s ``metrics`` that are objects with a name."""
    return [m for m in evaluation.get("metrics") or [] if isinstance(m, dict) and m.get("name")]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN
