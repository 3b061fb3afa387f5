"""The paper's plot: each metric against attention FLOPs, one point per setting, softmax marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def series(entry: dict[str, Any]) -> str:
    """The curve a sweep entry is drawn on: one per block size, pad side and converted layers (its
    points differ in T); per-layer settings on curves of their own, with and without a correction
    apart (calibrated beside uncorrected, as ``calibrate_vit_fashion_mnist.py`` sweeps them)."""
    st = entry["settings"]
    if entry.get("calibrated", False):
        kind = "calibrated" if entry.get("correction") is not None else "per-layer settings, no correction"
        return f"{kind}, {st.get('pad_type')}"
    layers = st.get("layers")
    layers = "all layers" if layers in (None, "all") else "layers " + ",".join(map(str, layers))
    return f"b={st.get('block_size')} {st.get('pad_type')}, {layers}"


def plot_sweep(data: dict[str, Any], path: str | Path, metrics: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = data["sweep"]
    names = metrics or [m["name"] for m in sweep[0]["metrics"]][:4]
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
    softmax_flops = sweep[0]["attention_flops"]["softmax"]
    for ax, name in zip(axes[0], names):
        groups: dict[str, list[tuple[float, float, int]]] = {}
        original = None
        for r in sweep:
            calibrated = r.get("calibrated", False)
            for m in r["metrics"]:
                if m["name"] == name:
                    steps = "" if calibrated else r["settings"].get("num_steps")
                    groups.setdefault(series(r), []).append((r["attention_flops"]["monarch"], m["converted"], steps))
                    original = m["original"]
        for key, points in groups.items():
            points.sort()
            xs, ys, ts = zip(*points)
            ax.plot(xs, ys, marker="o", linewidth=1, markersize=5, label=key, zorder=3)
            for x, y, t in points:
                if t != "":
                    ax.annotate(f"T={t}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        if original is not None:
            ax.scatter([softmax_flops], [original], marker="*", s=160, color="black", zorder=4,
                       label="softmax (original)")
            ax.axhline(original, color="black", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("attention FLOPs per sequence")
        ax.set_ylabel(name)
        ax.set_title(f"{data['task']}: {name}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{Path(str(data['model'])).name} on {Path(str(data['dataset']['name'])).name} "
                 f"({data['samples']} examples)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
