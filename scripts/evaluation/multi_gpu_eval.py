"""Data-parallel evaluation on several GPUs gives the numbers of one process (issue 18).

Builds, in code, a BERT-base-shaped classifier (12 layers, hidden 768, 12 heads, random weights,
float16), a word-level tokenizer and a labelled CSV of synthetic texts whose count divides by
neither the batch size nor the number of processes; then runs ``monarch-convert eval`` with a
sweep of two settings in one process and under ``accelerate launch --num_processes P``, and
compares the two reports (every metric and fidelity number, the sample count, the forward-pass
wall time).

    python scripts/evaluation/multi_gpu_eval.py prepare WORK
    accelerate launch --num_processes 1 -m monarch_convert.cli eval WORK/model ... --out WORK/one
    accelerate launch --num_processes 2 --multi_gpu -m monarch_convert.cli eval WORK/model ... --out WORK/two
    python scripts/evaluation/multi_gpu_eval.py compare WORK/one WORK/two

``run WORK --processes 2`` does all of it (the eval arguments are in ``EVAL_ARGS``).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

WORDS = [f"w{i}" for i in range(2000)]
EVAL_ARGS = ["--task", "text-classification", "--column", "text=text", "--column", "label=label",
             "--batch-size", "16", "--block-size", "16,32",
             "--num-steps", "1", "--metric-source", "offline"]


def prepare(work: Path, examples: int = 1001, seed: int = 0, tiny: bool = False) -> None:
    """The model folder (``work/model``) and the data (``work/data.csv``); ``tiny``: a 2-layer
    model and short texts, to check the script on a CPU."""
    import torch
    import transformers

    work.mkdir(parents=True, exist_ok=True)
    vocab = work / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab), do_lower_case=False, model_max_length=512)
    torch.manual_seed(seed)
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else {}
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, num_labels=2, **shape)  # BERT-base's shape
    model = transformers.BertForSequenceClassification(config).to(torch.float32 if tiny else torch.float16)
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    rng = random.Random(seed)
    with open(work / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(examples):  # 64 to 500 words: real padding in every batch
            words = rng.randint(4, 40) if tiny else rng.randint(64, 500)
            writer.writerow([" ".join(rng.choices(WORDS, k=words)), rng.randint(0, 1)])


def _numbers(report: dict[str, Any]) -> dict[str, float]:
    """Every number of a report's metrics and fidelity, by its path."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = float(value)

    for key in ("samples", "metrics", "fidelity", "attention_flops"):
        walk(key, report.get(key))
    for i, entry in enumerate(report.get("sweep") or []):
        for key in ("metrics", "fidelity", "attention_flops"):
            walk(f"sweep[{i}].{key}", entry.get(key))
    return out


def compare(one: Path, two: Path) -> float:
    """Prints the largest difference and the wall-time ratio; returns the largest difference."""
    a = json.loads((one / "evaluation.json").read_text())
    b = json.loads((two / "evaluation.json").read_text())
    na, nb = _numbers(a), _numbers(b)
    if na.keys() != nb.keys():
        raise SystemExit(f"the reports hold different numbers: {sorted(na.keys() ^ nb.keys())[:5]}")
    worst = max(((abs(na[k] - nb[k]), k) for k in na), default=(0.0, "-"))
    where = f" ({worst[1]})" if worst[0] else ""
    print(f"processes: {a['num_processes']} vs {b['num_processes']}; numbers compared: {len(na)}; "
          f"largest difference: {worst[0]:.3g}{where}")
    for label, wa, wb in _wall_times(a, b):
        print(f"forward wall time {label}: {wa:.3f} s vs {wb:.3f} s -> {wa / wb:.2f}x")
    return worst[0]


def _wall_times(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, float, float]]:
    rows = []
    for i, (ea, eb) in enumerate(zip(a.get("sweep") or [], b.get("sweep") or [])):
        rows.append((f"sweep[{i}]", ea["wall_time_s"], eb["wall_time_s"]))
    return [(label, _total(wa), _total(wb)) for label, wa, wb in rows]


def _total(wall: Any) -> float:
    return sum(wall.values()) if isinstance(wall, dict) else float(wall)


def _launcher(processes: int, cpu: bool) -> list[str]:
    """``accelerate launch`` on GPUs; on CPU processes torch's own launcher (gloo), which accelerate
    picks up the same way."""
    if cpu:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    multi = ["--multi_gpu"] if processes > 1 else []
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--num_processes", str(processes), *multi]


def run(work: Path, processes: int, tiny: bool = False) -> None:
    """The one-process and the ``processes``-process evaluation, then their comparison (``tiny``:
    on CPU processes, float32)."""
    if not (work / "model").exists():
        prepare(work, tiny=tiny)
    device = ["--device", "cpu", "--dtype", "float32"] if tiny else ["--device", "cuda", "--dtype", "float16"]
    common = [str(work / "model"), "--dataset", str(work / "data.csv"), *EVAL_ARGS, *device]
    # The first run on a machine fills Triton's and the CUDA libraries' caches (kernels compiled for
    # each new specialisation of the padded lengths): measured, it took 8.7 s against 0.9 s warm
    # for the same batches, so a throwaway one-process run goes first.
    for n, out in ((1, work / "warm"), (1, work / "one"), (processes, work / f"p{processes}")):
        subprocess.run([*_launcher(n, tiny), "-m", "monarch_convert.cli", "eval", *common, "--out", str(out)],
                       check=True)
    compare(work / "one", work / f"p{processes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("work", type=Path)
    p.add_argument("--tiny", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("one", type=Path)
    c.add_argument("two", type=Path)
    r = sub.add_parser("run")
    r.add_argument("work", type=Path)
    r.add_argument("--processes", type=int, default=2)
    r.add_argument("--tiny", action="store_true", help="a 2-layer model on CPU processes (checks the script)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.work, tiny=args.tiny)
    elif args.command == "compare":
        compare(args.one, args.two)
    else:
        run(args.work, args.processes, tiny=args.tiny)


if __name__ == "__main__":
    main()
