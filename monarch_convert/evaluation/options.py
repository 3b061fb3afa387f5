""":func:`~monarch_convert.evaluation.core.evaluate`'s options, grouped by what they are about.
Their defaults are ``evaluate``'s keyword defaults; the options only some tasks read are
:class:`~monarch_convert.evaluation.tasks.TaskOptions`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataOptions:
    """What to evaluate on."""

    dataset: Any  # a Hub name, a local file or folder, or a datasets.Dataset
    dataset_config: str | None
    split: str | None
    columns: dict[str, str] | None  # task role -> column name
    samples: int | None
    seed: int | None  # None: the first ``samples`` examples
    probe_train_split: str | None
    probe_train_fraction: float
    probe_train_samples: int | None
    name: str | None  # the dataset's name in the report


@dataclass(frozen=True)
class RunOptions:
    """How to run the models, and what to report."""

    batch_size: int
    max_length: int | None
    device: str
    dtype: Any  # a dtype name, a torch.dtype, or None (float32 for a checkpoint, as is for a model)
    processor: Any
    metric_source: str
    metrics: tuple[str, ...]  # extra Hub metrics
    fidelity: bool
    progress: bool
    warmup: bool
    out_dir: str | Path | None
    model_name: str | None  # the model's name in the report
