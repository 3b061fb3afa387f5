#!/usr/bin/env python
"""The op on the CPU, where converted models run on PyTorch: SDPA, the reference
(``kernels/reference.py``) and the inference path that eager calls without grad take
(``kernels/torch_inference.py``), float32, 12 heads, head dim 64, b = ceil(sqrt N), q/k/v as
transformers passes them ((B, N, H, d) transposed).

    python scripts/benchmarks/bench_cpu.py [--cases B:N[:right] ...] [--steps 1 2] [--pad-type post|pre]
                                           [--rounds 7] [--compile] [--csv FILE]

``B:N:right``: a key-padding mask, sequence i of the batch ``N - i N / (2B)`` tokens long, right
padded (what a tokenizer gives), passed to SDPA as a broadcast boolean mask. The three are timed in
turn, round after round, so that a slow spell of a shared machine hits all of them; each time is the
median over the rounds after the first. CSV rows (``bench_utils.Row``): kernel ``cpu``, provider
``sdpa``, ``monarch-reference`` or ``monarch-torch``, ``speedup_vs_best_sdpa`` = SDPA's time over the
row's, ``gpu`` the processor and its threads. ``--compile`` also times, under ``torch.compile`` (Inductor,
static shapes, compiled afresh for each case), the entry point (``monarch-torch+compile``: the path as
one custom op, ``kernels/torch_inference_op.py``) and the reference (``monarch-reference+compile``:
what compiled calls ran before code ``7f1f389``), and prints a second table."""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from bench_utils import Env, Row, commit, cpu_name, versions, write_csv

from monarch_convert import monarch_attention
from monarch_convert.kernels.layout import sequence_layout
from monarch_convert.kernels.reference import monarch_attention_torch

DEFAULT_CASES = ["8:256", "8:512", "8:512:right", "1:1024", "1:2048", "1:4096", "4:4096:right", "1:8192"]


def inputs(batch: int, seq: int, right: bool):
    """q, k, v in transformers' layout and the mask (None without ``right``), seeded."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, seq, 12, 64, generator=g).transpose(1, 2) for _ in range(3))
    if not right:
        return q, k, v, None
    lengths = torch.tensor([seq - i * seq // (2 * batch) for i in range(batch)])
    return q, k, v, torch.arange(seq)[None, :] < lengths[:, None]


def providers(q, k, v, mask, block: int, steps: int, pad_type: str = "post", compiled: bool = False) -> dict:
    """Name -> a call of it on these inputs (``compiled``: also the two compiled calls)."""
    layout = sequence_layout(mask, q.shape[0], q.shape[2], block, pad_type, q.device)
    sdpa_mask = None if mask is None else mask[:, None, None, :]

    def reference(q, k, v):
        return monarch_attention_torch(q, k, v, layout, block, steps, 0.125)

    def path(q, k, v):
        return monarch_attention(q, k, v, mask, block_size=block, num_steps=steps, pad_type=pad_type, backend="torch")

    calls = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask),
        "monarch-reference": lambda: reference(q, k, v),
        "monarch-torch": lambda: path(q, k, v),
    }
    if compiled:
        torch._dynamo.reset()  # a fresh compile per case: no recompile limit, no dynamic shapes
        for name, fn in (("monarch-reference+compile", reference), ("monarch-torch+compile", path)):
            calls[name] = lambda fn=torch.compile(fn, dynamic=False): fn(q, k, v)  # the first round compiles
    return calls


def table_lines(batch: int, seq: int, pad: float, steps: int, ms: dict) -> list[str]:
    """This case's row of the op table and, with the compiled calls, of the compiled table."""
    ref, path = ms["monarch-reference"], ms["monarch-torch"]
    lines = [f"| {batch} | {seq} | {pad:.0%} | {steps} | {ms['sdpa']:.1f} | {ref:.1f} ({ms['sdpa'] / ref:.2f}x) | "
             f"{path:.1f} ({ms['sdpa'] / path:.2f}x) | {ref / path:.2f}x |"]
    if "monarch-torch+compile" in ms:
        ref_c, path_c = ms["monarch-reference+compile"], ms["monarch-torch+compile"]
        lines.append(f"| {batch} | {seq} | {pad:.0%} | {steps} | {path:.1f} | {ref_c:.1f} | {path_c:.1f} | "
                     f"{ref_c / path_c:.2f}x |")
    return lines


def timed(calls: dict, rounds: int) -> dict[str, float]:
    """Median ms of each call over ``rounds`` rounds (the first dropped), the calls taking turns."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t[1:]) for name, t in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="B:N or B:N:right (default: %(default)s)")
    p.add_argument("--steps", nargs="+", type=int, default=[1, 2])
    p.add_argument("--pad-type", choices=["post", "pre"], default="post")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--compile", action="store_true", help="also the entry point and the reference compiled")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    env = Env(f"cpu: {cpu_name()}, {torch.get_num_threads()} threads", versions(), commit(), 0.0)
    rows, lines, compiled_lines = [], [], []
    for case in args.cases:
        batch, seq, *rest = case.split(":")
        batch, seq, right = int(batch), int(seq), rest == ["right"]
        q, k, v, mask = inputs(batch, seq, right)
        block = math.ceil(math.sqrt(seq))
        pad = 0.0 if mask is None else 1 - mask.float().mean().item()
        for steps in args.steps:
            with torch.inference_mode():
                ms = timed(providers(q, k, v, mask, block, steps, args.pad_type, args.compile), args.rounds)
            for name, t in ms.items():
                rows.append(env.stamp(Row(kernel="cpu", provider=name, dtype="float32", batch=batch, heads=12, seq=seq,
                                          head_dim=64, block=block, steps=steps, pad_frac=round(pad, 3),
                                          median_ms=f"{t:.2f}", speedup_vs_best_sdpa=f"{ms['sdpa'] / t:.2f}",
                                          best_sdpa="sdpa", note=f"pad_type {args.pad_type}")))
            line, *compiled_line = table_lines(batch, seq, pad, steps, ms)
            lines.append(line)
            compiled_lines += compiled_line
            print(line, *compiled_line, sep="\n", flush=True)
    print(f"\n{env.gpu}; {env.versions}; code {env.commit}; pad_type {args.pad_type}\n")
    print("| B | N | padding | T | SDPA ms | reference ms (x SDPA) | inference path ms (x SDPA) | path / reference |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    if compiled_lines:
        print("\n| B | N | padding | T | path eager ms | reference compiled ms | path compiled ms | "
              "path compiled / reference compiled |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(compiled_lines))
    print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'bench_cpu.csv')}")


if __name__ == "__main__":
    main()
