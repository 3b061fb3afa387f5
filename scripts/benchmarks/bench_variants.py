#!/usr/bin/env python
"""The launcher's knob sets (``bench_utils.VARIANTS``) on the variant cases, CUDA-graph replays.

    python scripts/benchmarks/bench_variants.py [--cases T2-long padded] [--variants default nopdl]
    python scripts/benchmarks/bench_variants.py --seqs 1024 2048 --batches 1 8 [--steps 2] [--mask pad]

The second form sweeps its own cases (named ``sweep``, ``sweep-T2``, ``sweep-pad`` ...) in place of the
standard ones. Prints one line per case; writes CSV rows (kernel = ``variant:<name>:<case>``)."""

from __future__ import annotations

import argparse
import sys

import torch
from bench_utils import VARIANTS, Case, bench, environment, graphed, selected, write_csv

CASES = [Case("paper-short", 64, 256), Case("paper-short", 1024, 256), Case("T2-short", 1024, 256, steps=2),
         Case("short-512", 256, 512), Case("paper-long", 1, 4096), Case("paper-long", 1, 8192),
         Case("paper-long", 1, 16384), Case("T2-long", 1, 4096, steps=2), Case("T2-long", 1, 16384, steps=2),
         Case("mid", 8, 1024), Case("mid", 8, 2048), Case("unpadded", 8, 4096),
         Case("padded-50%", 8, 4096, pad_frac=0.5, mask="pad"),
         Case("ones-mask", 8, 4096, mask="ones"), Case("T2-padded-50%", 8, 4096, steps=2, pad_frac=0.5, mask="pad"),
         Case("padded-30%", 256, 512, pad_frac=0.3, mask="pad"), Case("paper-short", 4096, 256),
         Case("padded-short-30%", 1024, 256, pad_frac=0.3, mask="pad"), Case("T2-short", 256, 256, steps=2)]


def sweep(args) -> list[Case]:
    """The ``--seqs`` x ``--batches`` cases at ``--steps`` and ``--mask``."""
    name = "sweep" + (f"-T{args.steps}" if args.steps > 1 else "") + ("" if args.mask == "none" else f"-{args.mask}")
    pad = 0.3 if args.mask == "pad" else 0.0
    return [Case(name, b, n, steps=args.steps, pad_frac=pad, mask=args.mask) for b in args.batches for n in args.seqs]


def main(argv=None) -> None:
    from monarch_convert.kernels.triton.launch import monarch_attention_triton

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", metavar="NAME")
    p.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=sorted(VARIANTS), metavar="NAME")
    p.add_argument("--seqs", nargs="+", type=int, metavar="N", help="sweep these sequence lengths")
    p.add_argument("--batches", nargs="+", type=int, default=[8], metavar="B", help="the sweep's batch sizes")
    p.add_argument("--steps", type=int, default=1, help="the sweep's T")
    p.add_argument("--mask", choices=("none", "ones", "pad"), default="none",
                   help="the sweep's key-padding mask (pad: 30%% right padding)")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_variants.py needs a CUDA GPU")
    env, rows = environment(), []
    for case in sweep(args) if args.seqs else selected(CASES, args.cases):
        q, k, v, mask, n_real = case.inputs()
        line = []
        for name in args.variants:
            knobs = VARIANTS[name]
            if knobs.mode == "fused" and case.batch * case.heads < 256:  # (the on-chip kernel runs at any size)
                continue  # one program per head: far too few programs
            fn = lambda: monarch_attention_triton(q, k, v, mask, case.block, case.steps, "post",  # noqa: E731
                                                  case.head_dim ** -0.5, knobs=knobs)
            ms = bench(graphed(fn))
            line.append(f"{name}={ms:.4f}")
            rows.append(case.row(f"variant:{name}:{case.name}", "triton+graph", ms, env, n_real, note=str(knobs)))
        print(f"{case.name} B={case.batch} N={case.seq} T={case.steps}: " + " ".join(line), flush=True)
    print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'variants.csv')}")


if __name__ == "__main__":
    main()
