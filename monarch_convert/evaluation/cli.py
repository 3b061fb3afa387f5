"""``monarch-convert eval MODEL --task TASK --dataset DATA --out DIR``.

Only typer and the standard library at module level, so that ``--help`` stays fast.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import MonarchConvertError
from ..interrupts import during

EVAL_HELP = (
    "Evaluate MODEL before and after conversion to MonarchAttention on one task.\n\n"
    "Runs the original (softmax) and the converted model on the same examples and reports each metric "
    "before, after and the difference, attention FLOPs and wall time of each, and label-free fidelity "
    "(per-layer attention error; output KL and top-1 agreement, or embedding cosine). Writes "
    "evaluation.json, evaluation.md and evaluation.png (metric against attention FLOPs) to --out and "
    "prints the table.\n\n"
    "Sweeps: comma-separated --block-size and --num-steps values and ';'-separated --layers sets are "
    "crossed; each --setting 'block_size=16,num_steps=2' adds one explicit setting, and --setting "
    "'calibrated=DIR' the per-layer settings and correction of a folder written by `monarch-convert MODEL --out DIR "
    "--calibrate DATA` (its own curve in the plot).\n\n"
    "Tasks: image-classification, text-classification, question-answering, summarization, "
    "sentence-embedding."
)


SETTING_HELP = ("One explicit setting, e.g. 'block_size=16,num_steps=2', or 'calibrated=DIR' (a calibrated "
                "folder's settings and correction); repeatable.")


def _split_values(text: Optional[str], sep: str = ",") -> list:
    if text is None:
        return [None]
    return [t.strip() for t in text.split(sep) if t.strip()] or [None]


def build_sweep(block_size: Optional[str], num_steps: Optional[str], layers: Optional[str],
                settings: Optional[List[str]]) -> list[dict]:
    from ..config import parse_block_size, parse_layers

    grid = []
    steps_values = []
    for v in _split_values(num_steps):
        try:
            steps_values.append(None if v is None else int(v))
        except ValueError:
            raise MonarchConvertError(f"--num-steps must be integers, got {v!r}") from None
    for b, t, layer_set in itertools.product(
        [parse_block_size(v) for v in _split_values(block_size)],
        steps_values,
        [parse_layers(v) for v in _split_values(layers, ";")],
    ):
        grid.append({k: v for k, v in (("block_size", b), ("num_steps", t), ("layers", layer_set)) if v is not None})
    explicit = [_explicit_setting(s) for s in settings or []]
    if explicit and grid == [{}]:
        return explicit
    return grid + explicit


def _explicit_setting(text: str):
    """A ``--setting``: 'block_size=16,num_steps=2', or 'calibrated=DIR' (a calibrated checkpoint's
    per-layer settings and correction, from ``monarch-convert MODEL --out DIR --calibrate DATA``)."""
    from ..config import parse_setting

    if text.strip().startswith("calibrated="):
        from ..calibration.saving import load_calibrated

        return load_calibrated(text.strip()[len("calibrated="):])
    return parse_setting(text)


def _parse_columns(items: Optional[List[str]]) -> dict:
    out = {}
    for item in items or []:
        role, eq, name = item.partition("=")
        if not eq or not role.strip() or not name.strip():
            raise MonarchConvertError(f"--column expects ROLE=NAME (e.g. text=sentence), got {item!r}")
        out[role.strip()] = name.strip()
    return out


def eval_command(
    model: str = typer.Argument(..., help="Hub id or local folder of the model (with the task's head)."),
    task: str = typer.Option(..., "--task", "-t", help="image-classification, text-classification, "
                             "question-answering, summarization or sentence-embedding."),
    dataset: str = typer.Option(..., "--dataset", "-d",
                                help="Hub dataset name, or a local csv/json/parquet file or image folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for evaluation.json / .md / .png."),
    dataset_config: Optional[str] = typer.Option(None, help="Hub dataset configuration name."),
    split: Optional[str] = typer.Option(None, help="Dataset split (default: test, validation, then train)."),
    column: Optional[List[str]] = typer.Option(None, "--column",
                                               help="ROLE=NAME, e.g. text=sentence, label=label (repeatable)."),
    samples: Optional[int] = typer.Option(None, help="Evaluate a deterministic sample of this many examples."),
    seed: int = typer.Option(0, help="Seed of the sample (and the probe split)."),
    first: bool = typer.Option(False, "--first", help="Take the first --samples examples instead of a seeded sample."),
    batch_size: int = typer.Option(16, help="Batch size."),
    max_length: Optional[int] = typer.Option(None, help="Maximum input length in tokens (default: the model's)."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda (under `accelerate launch`: each process's GPU)."),
    dtype: str = typer.Option("float32", help="float32, float16, bfloat16 or auto (the checkpoint's)."),
    block_size: Optional[str] = typer.Option(None, help="Block size(s): an integer, 'auto', or a comma list to sweep."),
    num_steps: Optional[str] = typer.Option(None, help="Steps T: an integer or a comma list to sweep."),
    pad_type: Optional[str] = typer.Option(None, help="'post' or 'pre'."),
    layers: Optional[str] = typer.Option(None,
                                         help="Layers: 'all' or '0-3,8-11'; several sets separated by ';' to sweep."),
    backend: Optional[str] = typer.Option(None, help="'auto', 'torch' or 'triton'."),
    setting: Optional[List[str]] = typer.Option(
        None, "--setting", help=SETTING_HELP),
    metric_source: str = typer.Option("auto", help="auto (Hub evaluate modules unless offline), offline, or hub."),
    metric: Optional[List[str]] = typer.Option(None, "--metric",
                                               help="Extra Hub metric by name, through evaluate (repeatable)."),
    no_fidelity: bool = typer.Option(False, "--no-fidelity",
                                     help="Skip the per-layer fidelity (runs softmax a second time per layer)."),
    pooling: str = typer.Option("mean", help="sentence-embedding: mean or cls (sentence-transformers: its own)."),
    probe_train_split: Optional[str] = typer.Option(None, help="sentence-embedding: split to fit the linear probe on."),
    probe_train_fraction: float = typer.Option(0.5, help="sentence-embedding without --probe-train-split: part of the "
                                                         "data held out for the probe."),
    probe_train_samples: Optional[int] = typer.Option(None, help="sentence-embedding: cap on probe train examples."),
    max_new_tokens: int = typer.Option(64, help="summarization: generated tokens at most."),
    num_beams: Optional[int] = typer.Option(None,
                                            help="summarization: beams (default: the model's generation config)."),
    doc_stride: int = typer.Option(128, help="question-answering: overlap of context windows."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    from .core import evaluate

    _silence_libraries(quiet)
    shared = {k: v for k, v in (("pad_type", pad_type), ("backend", backend)) if v is not None}
    left = f"{out} was left as it was" if out is not None else "nothing was written"
    with during(f"evaluating {model}", left):  # the report is written only at the end
        report = evaluate(
            model, task, dataset, shared or None, sweep=build_sweep(block_size, num_steps, layers, setting),
            dataset_config=dataset_config, split=split, columns=_parse_columns(column), samples=samples,
            seed=None if first else seed, batch_size=batch_size, max_length=max_length, device=device, dtype=dtype,
            out_dir=out, metric_source=metric_source, metrics=tuple(metric or ()), fidelity=not no_fidelity,
            progress=not quiet, pooling=pooling, probe_train_split=probe_train_split,
            probe_train_fraction=probe_train_fraction, probe_train_samples=probe_train_samples,
            max_new_tokens=max_new_tokens, num_beams=num_beams, doc_stride=doc_stride,
        )
    typer.echo(report.to_markdown())
    if out is not None:
        typer.echo(f"Wrote {out / 'evaluation.json'}, {out / 'evaluation.md'} and {out / 'evaluation.png'}")


def _silence_libraries(quiet: bool) -> None:
    """With --quiet no progress bar at all; else at least not the weight-loading bar, which is
    noise before a one-line error."""
    from transformers.utils import logging as hf_logging

    from .progress import quiet_libraries

    if quiet:
        quiet_libraries()
    else:
        hf_logging.disable_progress_bar()


eval_command.__doc__ = EVAL_HELP
