"""The evaluation report: ``evaluation.json`` (stable field names), ``evaluation.md`` (tables) and,
``evaluation.png`` (metric against attention FLOPs, softmax marked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..flops import format_flops

JSON_FILE = "evaluation.json"
MARKDOWN_FILE = "evaluation.md"
PLOT_FILE = "evaluation.png"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    return str(value)


def _digits(name: str) -> int:
    return 4 if "cosine" in name or name == "kl" else 2


class EvaluationReport:
    """What :func:`monarch_convert.evaluate` returns. ``data`` is the JSON document."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.data, indent=indent, default=str)

    def metric(self, name: str, which: str = "converted", setting: int = 0) -> float:
        for row in self.data["sweep"][setting]["metrics"]:
            if row["name"] == name:
                return row[which]
        raise KeyError(name)

    # ------------------------------------------------------------------------------- Markdown
    def to_markdown(self) -> str:
        d = self.data
        lines = _header(d)
        sweep = d.get("sweep") or []
        if sweep:
            lines += _main_table(sweep[0]) + _sweep_table(sweep) + _layer_table(sweep[0]["fidelity"]["layers"])
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()

    # ---------------------------------------------------------------------------------- files
    def save(self, out_dir: str | Path, plot: bool = True) -> dict[str, Path]:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            from ..errors import MonarchConvertError

            raise MonarchConvertError(f"--out {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / JSON_FILE, "markdown": out / MARKDOWN_FILE}
        paths["json"].write_text(self.to_json() + "\n")
        paths["markdown"].write_text(self.to_markdown())
        if plot and self.data.get("sweep"):
            from .plot import plot_sweep

            paths["plot"] = plot_sweep(self.data, out / PLOT_FILE)
        return paths


# --------------------------------------------------------------------------- Markdown sections


def _header(d: dict[str, Any]) -> list[str]:
    """The title, and what was evaluated on what."""
    ds = d["dataset"]
    lines = [
        f"## MonarchAttention evaluation: {d['task']}",
        "",
        f"- model: `{d['model']}`",
        f"- dataset: `{ds['name']}`" + (f" ({ds['config']})" if ds.get("config") else "")
        + (f", split `{ds['split']}`" if ds.get("split") else "")
        + f"; {d['samples']} examples evaluated (seed {d['seed']}) of {ds['size']}",
        f"- device: {d['device']} x{d['num_processes']}, dtype {d['dtype']}, batch size {d['batch_size']}"
        + (f", max length {d['max_length']}" if d.get("max_length") else ""),
    ]
    if d.get("probe"):
        p = d["probe"]
        lines.append(f"- linear probe: {p['classifier']} fitted on the original's embeddings of "
                     f"{p['train_examples']} train examples ({p['train_split']}); pooling {p['pooling']}")
    return lines


def _main_table(main: dict[str, Any]) -> list[str]:
    """The main setting: each metric, attention FLOPs and wall time, before and after."""
    s = main["settings"]
    lines = [f"- settings: {main['label']} (backend {s.get('backend')}); {main['converted_modules']} attention "
             f"modules converted, {len(main['skipped_modules'])} skipped", ""]
    lines += ["| metric | original (softmax) | converted (Monarch) | delta |", "|---|---:|---:|---:|"]
    for m in main["metrics"]:
        k = _digits(m["name"])
        lines.append(f"| {m['name']} | {_fmt(m['original'], k)} | {_fmt(m['converted'], k)} | {m['delta']:+.{k}f} |")
    f, w = main["attention_flops"], main["wall_time_s"]
    lines.append(f"| attention FLOPs / sequence (mean N = {f['seq_len']}) | {format_flops(f['softmax'])} | "
                 f"{format_flops(f['monarch'])} | {100 * f['ratio']:.1f}% of softmax |")
    speed = f"{w['speedup']:.2f}x" if w.get("speedup") else "-"
    lines.append(f"| wall time (s) | {w['original']:.2f} | {w['converted']:.2f} | speedup {speed} |")
    if w.get("speedup_median_batch"):
        lines.append(f"| median batch time (s) | {w['original_median_batch']:.3f} | "
                     f"{w['converted_median_batch']:.3f} | speedup {w['speedup_median_batch']:.2f}x |")
    out = main["fidelity"]["output"]
    if out:
        lines += ["", "Output fidelity (converted vs original, no labels): "
                  + ", ".join(f"{k} {_fmt(v, _digits(k))}" for k, v in out.items())]
    return lines


def _sweep_table(sweep: list[dict[str, Any]]) -> list[str]:
    """One row per setting (none for a single setting): metrics, FLOPs, time, two fidelity numbers."""
    if len(sweep) < 2:
        return []
    main = sweep[0]
    names = [m["name"] for m in main["metrics"]]
    fid_keys = [k for k in main["fidelity"]["output"] if k not in names][:2]
    header = ["setting"] + names + ["attention FLOPs (% softmax)", "converted time (s)"] + fid_keys
    lines = ["", "### Sweep", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    orig = {m["name"]: m["original"] for m in main["metrics"]}
    lines.append("| softmax (original) | " + " | ".join(_fmt(orig[n], _digits(n)) for n in names)
                 + f" | 100.0 | {main['wall_time_s']['original']:.2f} |" + " - |" * len(fid_keys))
    for r in sweep:
        vals = {m["name"]: m["converted"] for m in r["metrics"]}
        fo = r["fidelity"]["output"]
        row = [r["label"]] + [_fmt(vals.get(n), _digits(n)) for n in names]
        row += [f"{100 * r['attention_flops']['ratio']:.1f}", f"{r['wall_time_s']['converted']:.2f}"]
        row += [_fmt(fo.get(k), _digits(k)) for k in fid_keys]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _layer_table(layers: list[dict[str, Any]]) -> list[str]:
    if not layers:
        return []
    lines = ["", "Per-layer fidelity (attention output vs softmax on the same hidden states, main setting):", "",
             "| module | layer | relative error | cosine |", "|---|---:|---:|---:|"]
    for row in layers:
        error, cosine = _fmt(row["relative_error"], 4), _fmt(row["cosine"], 4)
        lines.append(f"| {row['name']} | {row['layer']} | {error} | {cosine} |")
    return lines
