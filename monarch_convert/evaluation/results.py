"""The report's rows for one setting: each metric before and after, attention FLOPs, wall times;
and the facts every report carries (the setting's label, library versions)."""

from __future__ import annotations

from typing import Any

from .metrics import extra_hub_metric
from .runner import PassResult
from .tasks import Options, Task


def setting_label(settings: dict[str, Any], calibration: Any = None) -> str:
    layers = settings.get("layers")
    layers = "all" if layers in (None, "all") else ",".join(map(str, layers))
    if settings.get("layer_settings"):  # per-layer settings (a calibrated checkpoint's): b and T vary
        kind = f" + {calibration.kind} correction" if calibration is not None else ""
        return f"per-layer settings{kind} {settings.get('pad_type')} layers={layers}"
    return f"b={settings.get('block_size')} T={settings.get('num_steps')} {settings.get('pad_type')} layers={layers}"


def metric_rows(original: dict[str, tuple[float, str]], converted: dict[str, tuple[float, str]]) -> list[dict]:
    """One row a metric of ``original`` (``{name: (value, source)}``): before, after, difference."""
    rows = []
    for name, (before, source) in original.items():
        after = converted[name][0]
        rows.append({"name": name, "original": before, "converted": after, "delta": after - before, "source": source})
    return rows


def extra_metric_rows(task: Task, opts: Options, original: list, converted: list, references: list) -> list[dict]:
    """:func:`metric_rows` of the extra Hub metrics (``opts.extra_metrics``) of both predictions."""
    rows = []
    for name in opts.extra_metrics:
        before = extra_hub_metric(name, *task.extra_metric_inputs(original, references), opts.metric_source)
        after = extra_hub_metric(name, *task.extra_metric_inputs(converted, references), opts.metric_source)
        rows += metric_rows(before, after)
    return rows


def attention_flops(model: Any, lengths: list[int]) -> dict[str, Any]:
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


def wall_times(original: PassResult, converted: PassResult) -> dict[str, float | None]:
    t_orig, t_new = original.wall_time_s, converted.wall_time_s
    med_orig, med_new = original.median_batch_s, converted.median_batch_s
    return {"original": t_orig, "converted": t_new, "speedup": (t_orig / t_new) if t_new > 0 else None,
            "original_median_batch": med_orig, "converted_median_batch": med_new,
            "speedup_median_batch": (med_orig / med_new) if med_new else None}


def versions() -> dict[str, str]:
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
