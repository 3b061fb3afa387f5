"""``evaluate``: the original and the converted model on the same examples; each metric before,
after and the difference; attention FLOPs and wall time of each; fidelity; sweeps.

The model is converted in place and reverted afterwards (``revert`` is bit-identical), so no
second copy of the weights is ever held: the original's outputs are computed first and kept
(logits, embeddings, answers, generated ids: small), then each setting of the sweep is applied in
turn and run over the same batches. A model given already converted is evaluated against its own
softmax original, and handed back converted with its own settings.

Data parallel: under ``accelerate launch`` each process takes every P-th batch; predictions and
fidelity sums are gathered (``accelerate.utils.gather_object``) and the main process computes the
metrics and writes the report, which is the same as on one device (wall time aside).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..dtypes import torch_dtype
from ..errors import MonarchConvertError
from .data import load_data, resolve_columns, sample_indices, split_indices
from .tasks import Batch, Options, get_task, to_device

def _as_config(value, what: str):
    from ..config import MonarchConfig

    if value is None or isinstance(value, MonarchConfig):
        return value
    if isinstance(value, dict):
        try:
            return MonarchConfig.from_dict(value)
        except ValueError as e:
            raise MonarchConvertError(f"{what}: {e}") from e
    raise MonarchConvertError(f"{what} must be a MonarchConfig or a dict, got {type(value).__name__}")


def setting_label(settings: dict[str, Any]) -> str:
    layers = settings.get("layers")
    layers = "all" if layers in (None, "all") else ",".join(map(str, layers))
    return f"b={settings.get('block_size')} T={settings.get('num_steps')} {settings.get('pad_type')} layers={layers}"


class _Dist:
    """One process, or one of several under ``accelerate launch``."""

    def __init__(self, device: str = "cpu"):
        self.rank, self.world, self.device = 0, 1, None
        try:
            import torch
            from accelerate import PartialState

            # accelerate spreads CPU processes (gloo) only when asked for the CPU explicitly.
            state = PartialState(cpu=str(device).startswith("cpu") or not torch.cuda.is_available())
            self.rank, self.world, self.device = state.process_index, state.num_processes, state.device
        except Exception:  # noqa: BLE001 - accelerate missing or unconfigured: one process
            pass

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, items: list) -> list:
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def broadcast(self, obj):
        """The main process's ``obj`` on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def shard(self, batches: Sequence[Batch]) -> list[Batch]:
        return list(batches[self.rank :: self.world])


class _Runner:
    def __init__(self, task, model, opts: Options, dist: _Dist, progress: bool):
        self.task, self.model, self.opts, self.dist, self.progress = task, model, opts, dist, progress
        self.probe_data = None
        self.current_mask = None

    def _bar(self, items, desc):
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, disable=not self.progress or not self.dist.main, leave=False, unit="batch")

    def _inputs(self, batch: Batch) -> dict:
        return to_device(batch.build(), self.opts.device, self.opts.dtype)

    def run(self, batches: Sequence[Batch], desc: str, reference: dict | None = None, layer_fid=None, warmup=True):
        """One pass. Returns (outputs by batch index, gathered [(example_id, prediction)],
        gathered fidelity sums, wall time in seconds)."""
        import torch

        from .fidelity import _sync

        mine = self.dist.shard(batches)
        outputs: dict[int, dict] = {}
        preds: list[tuple[int, Any]] = []
        fid: dict[str, list[float]] = {}
        elapsed = 0.0
        per_batch: list[float] = []
        device = torch.device(self.opts.device)
        with torch.no_grad():
            if warmup and mine:
                self.task.forward(self.model, mine[0], self._inputs(mine[0]), self.opts)
            if layer_fid is not None:
                layer_fid.__enter__()
            try:
                for batch in self._bar(mine, desc):
                    inputs = self._inputs(batch)
                    self.current_mask = inputs.get("attention_mask")
                    before_overhead = layer_fid.overhead_s if layer_fid is not None else 0.0
                    _sync(device)
                    start = time.perf_counter()
                    out = self.task.forward(self.model, batch, inputs, self.opts)
                    _sync(device)
                    took = time.perf_counter() - start
                    if layer_fid is not None:
                        took -= layer_fid.overhead_s - before_overhead
                    elapsed += took
                    per_batch.append(took)
                    outputs[batch.index] = out
                    preds.extend(zip(batch.example_ids, self.task.predictions(batch, out, self.opts)))
                    if reference is not None:
                        if layer_fid is not None:
                            layer_fid.paused = True
                        sums = self.task.output_fidelity(batch, inputs, reference[batch.index], out, self.model, self.model, self.opts)
                        if layer_fid is not None:
                            layer_fid.paused = False
                        _accumulate_fid(fid, sums)
            finally:
                if layer_fid is not None:
                    layer_fid.__exit__(None, None, None)
                self.current_mask = None
        gathered_preds = self.dist.gather(preds)
        gathered_fid = self.dist.gather([fid])
        times = self.dist.gather([elapsed])
        self.last_batch_times = self.dist.gather(per_batch)
        return outputs, gathered_preds, gathered_fid, max(times)

    def embed_with_original(self, ds) -> Any:
        """Embeddings of ``ds`` by the (unconverted) model, for the sentence-embedding probe."""
        import torch

        batches = self.task.make_batches(ds, self.cols, self.processor, self.model, self.opts)
        _, preds, _, _ = self.run(batches, "probe train (original)", warmup=False)
        order = sorted(preds, key=lambda p: p[0])
        return torch.stack([p for _, p in order])


def _accumulate_fid(total: dict, part: dict) -> None:
    """Add ``part``'s (sum, count) pairs to ``total``; keys ending in ``_min`` keep the minimum."""
    for k, (v, n) in part.items():
        if k.endswith("_min"):
            total[k] = [min(total.get(k, [float("inf")])[0], v), 1]
        else:
            acc = total.setdefault(k, [0.0, 0])
            acc[0] += v
            acc[1] += n


def _merge_fid(parts: Iterable[dict]) -> dict[str, float]:
    total: dict[str, list[float]] = {}
    for part in parts:
        _accumulate_fid(total, part)
    return {k: (v if k.endswith("_min") else (v / n if n else None)) for k, (v, n) in total.items()}


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def _ordered(preds: list[tuple[int, Any]], n: int) -> list:
    out: list = [None] * n
    for i, p in preds:
        out[i] = p
    return out


def _flops(model, lengths: list[int]) -> dict[str, Any]:
    """Attention FLOPs per sequence, averaged over the evaluated sequences' real lengths."""
    from collections import Counter

    from ..conversion import conversion_report

    counts = Counter(int(n) for n in lengths if n > 0)
    total = sum(counts.values())
    softmax = monarch = 0.0
    for n, c in counts.items():
        f = conversion_report(model, seq_len=n).attention_flops
        softmax += c * f["softmax"]
        monarch += c * f["monarch"]
    softmax, monarch = softmax / max(total, 1), monarch / max(total, 1)
    mean_len = sum(n * c for n, c in counts.items()) / max(total, 1)
    return {
        "seq_len": round(mean_len, 1),
        "seq_len_max": max(counts) if counts else 0,
        "softmax": softmax,
        "monarch": monarch,
        "ratio": monarch / softmax if softmax else 1.0,
        "per": "sequence (mean over the evaluated sequences' real lengths)",
    }


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("monarch-convert", "torch", "transformers", "datasets", "evaluate", "accelerate", "torchmetrics",
                "rouge-score", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def evaluate(
    model_or_path: Any,
    task: str,
    dataset: Any,
    config: Any = None,
    *,
    sweep: Sequence[Any] | None = None,
    dataset_config: str | None = None,
    split: str | None = None,
    columns: dict[str, str] | None = None,
    samples: int | None = None,
    seed: int | None = 0,
    batch_size: int = 16,
    max_length: int | None = None,
    device: str = "cpu",
    dtype: Any = None,
    processor: Any = None,
    out_dir: str | Path | None = None,
    metric_source: str = "auto",
    metrics: Sequence[str] = (),
    fidelity: bool = True,
    progress: bool = True,
    warmup: bool = True,
    probe_train_split: str | None = None,
    probe_train_fraction: float = 0.5,
    probe_train_samples: int | None = None,
    pooling: str = "mean",
    normalize: bool = True,
    doc_stride: int = 128,
    max_answer_length: int = 30,
    n_best: int = 20,
    max_new_tokens: int | None = 64,
    num_beams: int | None = None,
    max_target_length: int = 128,
    model_name: str | None = None,
    dataset_name: str | None = None,
):
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
    import torch

    from ..conversion import conversion_report, convert, is_converted, revert
    from .report import EvaluationReport

    t_start = time.perf_counter()
    task_obj = get_task(task)
    if not progress:
        _quiet_libraries()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MonarchConvertError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise MonarchConvertError(f"max_length must be an integer >= 2, got {max_length!r}")
    dist = _Dist(device)
    if dist.world > 1:
        device = str(dist.device)
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MonarchConvertError(f"invalid device {device!r}") from e
    config = _as_config(config, "config")
    settings_list = [_as_config(s, f"sweep setting {i}") for i, s in enumerate(sweep)] if sweep else [None]
    if sweep is not None and not sweep:
        raise MonarchConvertError("sweep must list at least one setting")

    if isinstance(model_or_path, torch.nn.Module):
        task_obj.check_model(model_or_path)

    # ----------------------------------------------------------------------------- data
    ds = load_data(dataset, dataset_config=dataset_config, split=split)
    if len(ds) == 0:
        raise MonarchConvertError("the dataset is empty: nothing to evaluate")
    cols = resolve_columns(ds, task_obj.roles, task_obj.required, columns, task_obj.name)
    all_idx = list(range(len(ds)))
    probe_ds = None
    if task_obj.name == "sentence-embedding" and "label" in cols:
        if probe_train_split is not None:
            pds = load_data(dataset, dataset_config=dataset_config, split=probe_train_split)
            if cols["label"] not in pds.column_names or cols["text"] not in pds.column_names:
                raise MonarchConvertError(f"the probe train split {probe_train_split!r} lacks the text or label column")
            probe_ds = pds.select(sample_indices(len(pds), probe_train_samples, seed))
        else:
            train_idx, all_idx = split_indices(all_idx, probe_train_fraction, seed)
            if probe_train_samples is not None:
                train_idx = [train_idx[i] for i in sample_indices(len(train_idx), probe_train_samples, seed)]
            probe_ds = ds.select(train_idx)
    picked = [all_idx[i] for i in sample_indices(len(all_idx), samples, seed)]
    if not picked:
        raise MonarchConvertError("the sample is empty: nothing to evaluate")
    eval_ds = ds.select(picked)
    # ---------------------------------------------------------------------------- model
    tdtype = torch_dtype(dtype)
    if isinstance(model_or_path, (str, Path)):
        path = str(model_or_path)
        model = task_obj.load_model(path, tdtype if dtype is not None else torch.float32, device)
        proc = task_obj.load_processor(path, processor)
        name = model_name or path
    elif isinstance(model_or_path, torch.nn.Module):
        model = model_or_path
        task_obj.check_model(model)
        proc = task_obj.load_processor(None, processor)
        try:
            model.to(device)
            if tdtype is not None:
                model.to(tdtype)
        except (RuntimeError, AssertionError) as e:
            raise MonarchConvertError(f"cannot move the model to {device!r}: {e}") from e
        model.eval()
        name = model_name or getattr(model.config, "name_or_path", None) or type(model).__name__
    else:
        raise MonarchConvertError(f"model_or_path must be a model or a path/Hub id, got {type(model_or_path).__name__}")
    task_obj.check_model(model)
    model_dtype = next(model.parameters()).dtype
    opts = Options(batch_size=batch_size, max_length=max_length, device=device,
                   dtype=model_dtype if model_dtype.is_floating_point else None, metric_source=metric_source,
                   extra_metrics=tuple(metrics), seed=seed, pooling=pooling, normalize=normalize, doc_stride=doc_stride,
                   max_answer_length=max_answer_length, n_best=n_best, max_new_tokens=max_new_tokens,
                   num_beams=num_beams, max_target_length=max_target_length)
    from .metrics import hub_allowed

    hub_allowed(metric_source)  # validates the name

    references = task_obj.references(eval_ds, cols, model)
    batches = task_obj.make_batches(eval_ds, cols, proc, model, opts)
    if not batches:
        raise MonarchConvertError("the sample is empty: nothing to evaluate")
    lengths = [n for b in batches for n in b.lengths]

    # --------------------------------------------------------------- original (softmax)
    initially = conversion_report(model).settings if is_converted(model) else None
    from ..conversion import stored_settings

    base = initially or stored_settings(model)
    if initially is not None:
        revert(model)
    if base is not None and hasattr(model.config, "monarch_attention"):
        delattr(model.config, "monarch_attention")
    from ..config import MonarchConfig

    base = (base or MonarchConfig()).merged(config)

    runner = _Runner(task_obj, model, opts, dist, progress)
    runner.cols, runner.processor = cols, proc
    results = []
    try:
        if probe_ds is not None:
            probe_labels = list(probe_ds[cols["label"]])
            runner.probe_data = (probe_ds, probe_labels)
        task_obj.setup(runner)
        ref_outputs, ref_preds, _, t_orig = runner.run(batches, "original (softmax)", warmup=warmup)
        med_orig = _median(runner.last_batch_times)
        ref_preds = _ordered(ref_preds, len(eval_ds))
        state: dict[str, Any] = {}
        orig_metrics = task_obj.compute_metrics(ref_preds, references, opts, state) if dist.main else {}
        if task_obj.name == "sentence-embedding":
            state["original_embeddings"] = torch.stack(ref_preds)

        # ------------------------------------------------------------- each setting
        for setting in settings_list:
            revert(model)
            convert(model, base.merged(setting))
            report = conversion_report(model)
            label = setting_label(report.settings.to_dict())
            from .fidelity import LayerFidelity

            lf = LayerFidelity(model, lambda: runner.current_mask) if fidelity and report.converted else None
            if task_obj.name == "summarization":
                task_obj.softmax_context = _softmax_context(model)
            _, new_preds, fid_parts, t_new = runner.run(batches, f"converted {label}", reference=ref_outputs,
                                                        layer_fid=lf, warmup=warmup)
            new_preds = _ordered(new_preds, len(eval_ds))
            med_new = _median(runner.last_batch_times)
            layer_rows = []
            if lf is not None:
                merged: dict[str, list[float]] = {k: [0.0, 0.0, 0.0, 0.0] for k in lf.stats}
                for part in dist.gather([lf.stats]):
                    for k, v in part.items():
                        merged[k] = [a + b for a, b in zip(merged[k], v)]
                layer_rows = LayerFidelity.summarize(merged, lf.layers)
            if dist.main:
                new_metrics = task_obj.compute_metrics(new_preds, references, opts, state)
                metric_rows = []
                for mname, (orig_v, source) in orig_metrics.items():
                    conv_v = new_metrics[mname][0]
                    metric_rows.append({"name": mname, "original": orig_v, "converted": conv_v,
                                        "delta": conv_v - orig_v, "source": source})
                metric_rows += _extra_metric_rows(task_obj, opts, ref_preds, new_preds, references)
                results.append({
                    "settings": report.settings.to_dict(),
                    "label": label,
                    "converted_modules": len(report.converted),
                    "skipped_modules": [{"name": r.name, "reason": r.reason} for r in report.skipped],
                    "metrics": metric_rows,
                    "attention_flops": _flops(model, lengths),
                    "wall_time_s": {"original": t_orig, "converted": t_new,
                                    "speedup": (t_orig / t_new) if t_new > 0 else None,
                                    "original_median_batch": med_orig, "converted_median_batch": med_new,
                                    "speedup_median_batch": (med_orig / med_new) if med_new else None},
                    "fidelity": {"layers": layer_rows, "output": _merge_fid(fid_parts)},
                })
    finally:
        revert(model)
        if initially is not None:
            convert(model, initially)

    data = {
        "task": task_obj.name,
        "model": str(name),
        "dataset": {
            "name": dataset_name or (str(dataset) if isinstance(dataset, (str, Path)) else getattr(dataset, "info", None)
                                     and (dataset.info.dataset_name or "in-memory dataset")) or "in-memory dataset",
            "config": dataset_config,
            "split": split,
            "columns": cols,
            "size": len(ds),
        },
        "samples": len(eval_ds),
        "seed": seed,
        "batch_size": batch_size,
        "max_length": max_length,
        "device": str(device),
        "num_processes": dist.world,
        "dtype": str(model_dtype).replace("torch.", ""),
        "metric_source": metric_source,
    }
    if task_obj.name == "sentence-embedding":
        data["probe"] = None if probe_ds is None else {
            "train_examples": len(probe_ds), "train_split": probe_train_split or f"seeded {probe_train_fraction:g} of {split or 'the data'}",
            "classifier": "sklearn.linear_model.LogisticRegression", "pooling": pooling, "normalize": normalize,
        }
    results = dist.broadcast(results)  # every process returns the same report
    if results:
        main = results[0]
        data.update({
            "settings": main["settings"],
            "metrics": main["metrics"],
            "attention_flops": main["attention_flops"],
            "wall_time_s": main["wall_time_s"],
            "fidelity": main["fidelity"],
        })
    data["sweep"] = results
    data["versions"] = _versions()
    data["total_time_s"] = time.perf_counter() - t_start
    rep = EvaluationReport(data)
    if out_dir is not None and dist.main:
        rep.save(out_dir)
    return rep


def _quiet_libraries() -> None:
    """No progress bars from transformers (weight loading) and datasets either."""
    try:
        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
    except Exception:  # noqa: BLE001
        pass


def _softmax_context(model):
    """A context manager factory that runs ``model`` on softmax for its duration."""
    from contextlib import contextmanager

    from ..conversion import conversion_report, convert, revert

    @contextmanager
    def ctx():
        settings = conversion_report(model).settings
        revert(model)
        try:
            yield
        finally:
            convert(model, settings)

    return ctx


def _extra_metric_rows(task_obj, opts, ref_preds, new_preds, references) -> list[dict]:
    from .metrics import extra_hub_metric

    rows = []
    for name in opts.extra_metrics:
        if task_obj.name in ("image-classification", "text-classification"):
            fmt = lambda preds: [int(p.argmax()) for p in preds]  # noqa: E731
            refs = references
        elif task_obj.name == "summarization":
            fmt, refs = (lambda preds: list(preds)), references
        elif task_obj.name == "question-answering":
            fmt = lambda preds: [{"id": r["id"], "prediction_text": p} for p, r in zip(preds, references)]  # noqa: E731
            refs = references
        else:
            raise MonarchConvertError(f"extra metrics are not available for task {task_obj.name}")
        before = extra_hub_metric(name, fmt(ref_preds), refs, opts.metric_source)
        after = extra_hub_metric(name, fmt(new_preds), refs, opts.metric_source)
        for k, (v, src) in before.items():
            rows.append({"name": k, "original": v, "converted": after[k][0], "delta": after[k][0] - v, "source": src})
    return rows
