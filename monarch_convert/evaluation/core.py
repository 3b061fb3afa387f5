"""``evaluate``: the original and the converted model on the same examples; each metric before,
after and the difference; attention FLOPs and wall time of each; fidelity; sweeps.

The model is converted in place and reverted afterwards (``revert`` is bit-identical), so no
second copy of the weights is ever held: the original's outputs are computed first and kept
(logits, embeddings, answers, generated ids: small), then each setting of the sweep is applied in
turn and run over the same batches. A model given already converted is evaluated against its own
softmax original, and handed back converted with its own settings.

The stages, in order (:func:`run_evaluation`): :func:`load_sample`, :func:`load_model`,
:func:`set_up_run`, then :func:`run_sweep`: :func:`run_original` and :func:`run_setting` for each
setting; last :func:`assemble_report`.

Data parallel: under ``accelerate launch`` each process takes every P-th batch; predictions and
fidelity sums are gathered (``accelerate.utils.gather_object``) and the main process computes the
metrics and writes the report, which is the same as on one device (wall time aside).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from ..dtypes import torch_dtype
from ..errors import MonarchConvertError
from .data import check_text_cells, load_data, resolve_columns, sample_indices
from .distributed import Distributed
from .fidelity import LayerFidelity
from .options import DataOptions, RunOptions
from .progress import quiet_libraries
from .report import EvaluationReport
from .results import attention_flops, extra_metric_rows, metric_rows, setting_label, versions, wall_times
from .runner import PassResult, Runner
from .tasks import Batch, Options, Task, TaskOptions, get_task


def evaluate(
    model_or_path: Any, task: str, dataset: Any, config: Any = None, *, sweep: Sequence[Any] | None = None,
    # what to evaluate on (DataOptions)
    dataset_config: str | None = None, split: str | None = None, columns: dict[str, str] | None = None,
    samples: int | None = None, seed: int | None = 0, probe_train_split: str | None = None,
    probe_train_fraction: float = 0.5, probe_train_samples: int | None = None, dataset_name: str | None = None,
    # how to run and what to report (RunOptions)
    batch_size: int = 16, max_length: int | None = None, device: str = "cpu", dtype: Any = None,
    processor: Any = None, metric_source: str = "auto", metrics: Sequence[str] = (), fidelity: bool = True,
    progress: bool = True, warmup: bool = True, out_dir: str | Path | None = None, model_name: str | None = None,
    # read by some tasks only (TaskOptions)
    pooling: str = "mean", normalize: bool = True, doc_stride: int = 128, max_answer_length: int = 30,
    n_best: int = 20, max_new_tokens: int | None = 64, num_beams: int | None = None, max_target_length: int = 128,
) -> EvaluationReport:
    """Evaluate ``model_or_path`` before and after conversion to MonarchAttention on one task.

    model_or_path: a transformers model (with the task's head), or a Hub id / local folder (loaded
        with the task's ``AutoModelFor...`` class; a checkpoint saved converted is evaluated with
        its saved settings against its softmax original).
    task: ``image-classification`` (top-1/top-5 accuracy), ``text-classification`` (accuracy,
        macro F1), ``question-answering`` (SQuAD exact match/F1), ``summarization`` (ROUGE-1/2/L/Lsum
        of generated summaries), ``sentence-embedding`` (cosine to the original's embeddings,
        linear-probe accuracy).
    dataset: a Hub dataset name (``dataset_config``, ``split``), a local csv/json/parquet file or
        image folder, or a ``datasets.Dataset``; ``columns`` maps task roles (text, label, image,
        question, context, answers, document, summary, text_pair, id) to column names.
    config: the conversion settings (``MonarchConfig`` or dict); ``sweep``: a list of settings
        (each merged over ``config``) evaluated in one run; the first is the report's main one.
    samples / seed: a deterministic sample (seeded subset in dataset order; ``seed=None``: the
        first ``samples``). For sentence embeddings without ``probe_train_split``, the loaded
        split is first cut (seeded) into a probe train part (``probe_train_fraction``) and the
        evaluated part; ``probe_train_samples`` caps the former.
    metric_source: ``auto`` (Hub ``evaluate`` modules unless ``HF_HUB_OFFLINE``), ``offline``
        (torchmetrics / rouge-score / scikit-learn), or ``hub``. ``metrics``: extra metric names
        loaded through ``evaluate`` (online only).
    out_dir: write ``evaluation.json``, ``evaluation.md`` and ``evaluation.png`` there.

    Returns an :class:`EvaluationReport` (``.to_dict()``, ``.to_markdown()``, ``.save(dir)``).
    Raises :class:`MonarchConvertError` for bad input (unknown task, missing column, a model
    without the task's head, an empty sample, ...).
    """
    data = DataOptions(dataset, dataset_config, split, columns, samples, seed, probe_train_split,
                       probe_train_fraction, probe_train_samples, dataset_name)
    run = RunOptions(batch_size, max_length, device, dtype, processor, metric_source, tuple(metrics), fidelity,
                     progress, warmup, out_dir, model_name)
    task_options = TaskOptions(pooling, normalize, doc_stride, max_answer_length, n_best, max_new_tokens, num_beams,
                               max_target_length)
    return run_evaluation(model_or_path, task, config, sweep, data, run, task_options)


def run_evaluation(model_or_path: Any, task_name: str, config: Any, sweep: Sequence[Any] | None,
                     data: DataOptions, run: RunOptions, task_options: TaskOptions) -> EvaluationReport:
    """:func:`evaluate` with its options grouped: the stages, in order."""
    import torch

    started = time.perf_counter()
    task = get_task(task_name)
    if not run.progress:
        quiet_libraries()
    dist = Distributed(run.device)
    run = _checked(run, dist)
    base_config = _as_config(config, "config")
    settings = _sweep_settings(sweep if sweep is not None else _calibrated_folder(model_or_path))
    if isinstance(model_or_path, torch.nn.Module):
        task.check_model(model_or_path)  # before the data: a model without the head is the error to report
    sample = load_sample(task, data)
    loaded = load_model(task, model_or_path, run)
    ev = set_up_run(task, loaded, sample, data, run, task_options, dist)
    results = dist.broadcast(run_sweep(ev, base_config, settings))  # every process returns the same report
    report = assemble_report(ev, sample, data, results, started)
    if run.out_dir is not None and dist.main:
        report.save(run.out_dir)
    return report


# ------------------------------------------------------------------------------ option checks


def _checked(run: RunOptions, dist: Distributed) -> RunOptions:
    """``run`` with its sizes checked, and the device of this process under ``accelerate launch``."""
    import torch

    if isinstance(run.batch_size, bool) or not isinstance(run.batch_size, int) or run.batch_size < 1:
        raise MonarchConvertError(f"batch_size must be an integer >= 1, got {run.batch_size!r}")
    if run.max_length is not None and (not isinstance(run.max_length, int) or run.max_length < 2):
        raise MonarchConvertError(f"max_length must be an integer >= 2, got {run.max_length!r}")
    device = str(dist.device) if dist.world > 1 else run.device
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MonarchConvertError(f"invalid device {device!r}") from e
    return replace(run, device=device)


def _as_config(value: Any, what: str) -> Any:
    from ..calibration.saving import CalibratedSetting
    from ..config import MonarchConfig

    if value is None or isinstance(value, (MonarchConfig, CalibratedSetting)):
        return value
    if isinstance(value, dict):
        try:
            return MonarchConfig.from_dict(value)
        except ValueError as e:
            raise MonarchConvertError(f"{what}: {e}") from e
    raise MonarchConvertError(f"{what} must be a MonarchConfig or a dict, got {type(value).__name__}")


def _calibrated_folder(model_or_path: Any) -> list | None:
    """A local folder saved calibrated is evaluated with its correction (no sweep given)."""
    import json

    if not isinstance(model_or_path, (str, Path)):
        return None
    config_file = Path(str(model_or_path)).expanduser() / "config.json"
    if not config_file.is_file():
        return None
    entry = json.loads(config_file.read_text(encoding="utf-8")).get("monarch_attention") or {}
    if not entry.get("calibration"):
        return None
    from ..calibration.saving import load_calibrated

    return [load_calibrated(config_file.parent)]


def _sweep_settings(sweep: Sequence[Any] | None) -> list:
    """The settings evaluated one after the other (``[None]``: ``config`` alone)."""
    settings = [_as_config(s, f"sweep setting {i}") for i, s in enumerate(sweep)] if sweep else [None]
    if sweep is not None and not sweep:
        raise MonarchConvertError("sweep must list at least one setting")
    return settings


# ------------------------------------------------------------------------ stage 1: the sample


@dataclass(frozen=True)
class Sample:
    loaded: Any  # the whole split, a datasets.Dataset
    evaluated: Any  # the examples evaluated
    columns: dict[str, str]  # task role -> column


def load_sample(task: Task, data: DataOptions) -> Sample:
    """The examples to evaluate: the loaded split, less what the task holds out, sampled."""
    ds = load_data(data.dataset, dataset_config=data.dataset_config, split=data.split)
    if len(ds) == 0:
        raise MonarchConvertError(f"{_dataset_name(data)} is empty: no examples to evaluate")
    cols = resolve_columns(ds, task.roles, task.required, data.columns, task.name)
    where = _dataset_name(data) + (f" (split {data.split})" if data.split else "")
    check_text_cells(ds, cols, task.text_roles, where)  # the whole split: the same answer for any sample
    remaining = task.hold_out(ds, cols, data)
    picked = [remaining[i] for i in sample_indices(len(remaining), data.samples, data.seed)]
    if not picked:
        raise MonarchConvertError("the sample is empty: nothing to evaluate")
    return Sample(ds, ds.select(picked), cols)


# ------------------------------------------------------------------------- stage 2: the model


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    processor: Any  # tokenizer or image processor
    name: str  # in the report


def load_model(task: Task, model_or_path: Any, run: RunOptions) -> LoadedModel:
    """The model on ``run.device`` in eval mode (a path is loaded in ``run.dtype``, float32 by
    default; a model object is cast to it if given), with its preprocessor."""
    import torch

    dtype = torch_dtype(run.dtype)
    if isinstance(model_or_path, (str, Path)):
        path = str(model_or_path)
        model = task.load_model(path, dtype if run.dtype is not None else torch.float32, run.device)
        processor = task.load_processor(path, run.processor)
        task.check_model(model)
        return LoadedModel(model, processor, run.model_name or path)
    if not isinstance(model_or_path, torch.nn.Module):
        raise MonarchConvertError(f"model_or_path must be a model or a path/Hub id, got {type(model_or_path).__name__}")
    model = task.adopt_model(model_or_path)  # a SentenceTransformer: its transformer (the task keeps the rest)
    processor = task.load_processor(None, run.processor)
    try:
        model_or_path.to(run.device)
        if dtype is not None:
            model_or_path.to(dtype)
    except (RuntimeError, AssertionError) as e:
        raise MonarchConvertError(f"cannot move the model to {run.device!r}: {e}") from e
    model.eval()
    name = run.model_name or getattr(model.config, "name_or_path", None) or type(model).__name__
    return LoadedModel(model, processor, name)


# ------------------------------------------------------------- stages 3 and 4: running the model


@dataclass(frozen=True)
class Evaluation:
    """What the running stages share."""

    task: Task
    model: Any
    model_name: str
    opts: Options
    run: RunOptions
    dist: Distributed
    runner: Runner
    references: list
    batches: list[Batch]


def set_up_run(task: Task, loaded: LoadedModel, sample: Sample, data: DataOptions, run: RunOptions,
               task_options: TaskOptions, dist: Distributed) -> Evaluation:
    """The task's options, references and batches, and the runner."""
    from .metrics import hub_allowed

    model = loaded.model
    model_dtype = next(model.parameters()).dtype
    opts = Options(run.batch_size, run.max_length, run.device, model_dtype if model_dtype.is_floating_point else None,
                   run.metric_source, run.metrics, data.seed, task_options)
    hub_allowed(run.metric_source)  # validates the name
    references = task.references(sample.evaluated, sample.columns, model)
    batches = task.make_batches(sample.evaluated, sample.columns, loaded.processor, model, opts)
    if not batches:
        raise MonarchConvertError("the sample is empty: nothing to evaluate")
    runner = Runner(task, model, opts, dist, sample.columns, loaded.processor, run.progress)
    return Evaluation(task, model, loaded.name, opts, run, dist, runner, references, batches)


def run_sweep(ev: Evaluation, config: Any, settings: list) -> list[dict]:
    """The original, then each setting merged over ``config`` and the model's own settings (a
    model given converted, or a checkpoint saved converted). The model is handed back as it came:
    reverted here, then converted back by ``softmax()`` if it came converted."""
    from ..config import MonarchConfig
    from ..conversion import CONFIG_KEY, conversion_report, is_converted, revert, softmax, stored_settings

    model = ev.model
    base = conversion_report(model).settings if is_converted(model) else stored_settings(model)
    base = (base or MonarchConfig()).merged(config)
    with softmax(model):
        if stored_settings(model) is not None:  # a checkpoint saved converted: ``base`` holds its settings
            delattr(model.config, CONFIG_KEY)
        try:
            original = run_original(ev)
            # A calibrated folder's entry (--setting calibrated=DIR) carries its correction too.
            results = [run_setting(ev, original, base.merged(getattr(s, "settings", s)),
                                   getattr(s, "calibration", None)) for s in settings]
        finally:
            revert(model)
    return [r for r in results if r is not None]


@dataclass(frozen=True)
class Original:
    result: PassResult
    metrics: dict[str, tuple[float, str]]  # empty on the other processes


def run_original(ev: Evaluation) -> Original:
    """The model on softmax: what the task prepares with it, then its outputs (each setting's
    reference), predictions and metrics."""
    ev.task.prepare(ev.runner.predict, ev.opts)
    result = ev.runner.run(ev.batches, "original (softmax)", warmup=ev.run.warmup)
    metrics = ev.task.compute_metrics(result.predictions, ev.references, ev.opts) if ev.dist.main else {}
    ev.task.keep_original(result.predictions)
    return Original(result, metrics)


def run_setting(ev: Evaluation, original: Original, settings: Any, calibration: Any = None) -> dict[str, Any] | None:
    """The model converted with ``settings`` (and a calibration's correction folded in, if given),
    over the same batches: the setting's entry of the report on the main process (None on the others)."""
    from ..conversion import apply_calibration, conversion_report, convert, revert

    revert(ev.model)  # or convert would merge ``settings`` over the previous setting's
    convert(ev.model, settings)
    if calibration is not None:
        apply_calibration(ev.model, calibration)
    report = conversion_report(ev.model)
    label = setting_label(report.settings.to_dict(), calibration)
    layers = LayerFidelity(ev.model, lambda: ev.runner.current_mask) if ev.run.fidelity and report.converted else None
    converted = ev.runner.run(ev.batches, f"converted {label}", reference=original.result.outputs, layers=layers,
                              warmup=ev.run.warmup)
    layer_rows = layers.rows(ev.dist.gather) if layers is not None else []
    if not ev.dist.main:
        return None
    metrics = metric_rows(original.metrics, ev.task.compute_metrics(converted.predictions, ev.references, ev.opts))
    metrics += extra_metric_rows(ev.task, ev.opts, original.result.predictions, converted.predictions, ev.references)
    return {
        "settings": report.settings.to_dict(),
        "label": label,
        "calibrated": calibration is not None or bool(report.settings.layer_settings),
        "correction": calibration.kind if calibration is not None else None,
        "converted_modules": len(report.converted),
        "skipped_modules": [{"name": r.name, "reason": r.reason} for r in report.skipped],
        "metrics": metrics,
        "attention_flops": attention_flops(ev.model, [n for b in ev.batches for n in b.lengths]),
        "wall_time_s": wall_times(original.result, converted),
        "fidelity": {"layers": layer_rows, "output": converted.fidelity},
    }


# ----------------------------------------------------------------------- stage 5: the report

# The main setting's entries, repeated at the top of the report.
MAIN_SETTING_KEYS = ("settings", "metrics", "attention_flops", "wall_time_s", "fidelity")


def assemble_report(ev: Evaluation, sample: Sample, data: DataOptions, results: list[dict],
                    started: float) -> EvaluationReport:
    model_dtype = next(ev.model.parameters()).dtype
    report: dict[str, Any] = {
        "task": ev.task.name,
        "model": str(ev.model_name),
        "dataset": {"name": _dataset_name(data), "config": data.dataset_config, "split": data.split,
                    "columns": sample.columns, "size": len(sample.loaded)},
        "samples": len(sample.evaluated),
        "seed": data.seed,
        "batch_size": ev.run.batch_size,
        "max_length": ev.run.max_length,
        "device": str(ev.run.device),
        "num_processes": ev.dist.world,
        "dtype": str(model_dtype).replace("torch.", ""),
        "metric_source": ev.run.metric_source,
        **ev.task.report_fields(data, ev.opts),
    }
    if results:
        report.update({key: results[0][key] for key in MAIN_SETTING_KEYS})
    report["sweep"] = results
    report["versions"] = versions()
    report["total_time_s"] = time.perf_counter() - started
    return EvaluationReport(report)


def _dataset_name(data: DataOptions) -> str:
    if data.name:
        return data.name
    if isinstance(data.dataset, (str, Path)):
        return str(data.dataset) or "in-memory dataset"
    info = getattr(data.dataset, "info", None)
    return (info and info.dataset_name) or "in-memory dataset"
