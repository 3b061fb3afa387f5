#!/usr/bin/env python
"""Peak GPU memory of one call, as a multiple of the bytes of q, k, v and the output (the O(N d)
promise of docs/algorithm.md, section 3).

    python scripts/benchmarks/bench_memory.py [--old FOLDER] [--chunk-bytes N] [--variant NAME] [--csv FILE]

For each case (float16, 12 heads, head dim 64, b = ceil(sqrt(N))), q, k, v (and the mask) are made
first; the peak is ``torch.cuda.max_memory_allocated`` over one eager call (after a first call that
compiles and records), counted with q, k and v. ``--old``: also the kernels of another version
(``compare_versions.py``'s folder), in the same process. ``--variant``: this tree's kernels under a
knob set of ``bench_utils.VARIANTS`` (e.g. ``alhome``: aL in the output wherever it can be).
"""

from __future__ import annotations

import argparse
import functools
import sys

import torch
from bench_utils import VARIANTS, Case, Row, environment, write_csv

CASES = [Case("paper-long", 1, 16384), Case("T2-long", 1, 16384, steps=2),
         Case("padded-50%", 1, 16384, pad_frac=0.5, mask="pad"), Case("paper-long", 1, 8192),
         Case("unpadded", 8, 4096), Case("paper-short", 1024, 256), Case("T2-short", 1024, 256, steps=2)]


def peak_ratio(fn, q, k, v) -> float:
    """Peak bytes during ``fn()`` (q, k, v counted) over the bytes of q, k, v and its output."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    io = sum(x.numel() * x.element_size() for x in (q, k, v, out))
    return (peak + io - out.numel() * out.element_size()) / io


def measure(case: Case, new, old) -> tuple[float, float]:
    """(new, old) peak ratios of one case (old: NaN without another version)."""
    q, k, v, mask, _ = case.inputs()
    b, T, scale = case.block, case.steps, case.head_dim ** -0.5
    ours = peak_ratio(lambda: new(q, k, v, mask, b, T, "post", scale), q, k, v)
    was = peak_ratio(lambda: old(q, k, v, mask, b, T, scale), q, k, v) if old else float("nan")
    return ours, was


def main(argv=None) -> None:
    from compare_versions import import_kernels

    from monarch_convert.kernels.triton.launch import monarch_attention_triton

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", default=None, help="folder holding another version's kernels/ folder")
    p.add_argument("--chunk-bytes", type=int, default=None, help="launch.set_chunk_bytes first (heads in chunks)")
    p.add_argument("--variant", default="default", choices=sorted(VARIANTS), help="knobs of this tree's kernels")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_memory.py needs a CUDA GPU")
    if args.chunk_bytes is not None:
        from monarch_convert.kernels.triton.launch import set_chunk_bytes

        set_chunk_bytes(args.chunk_bytes)
    old = import_kernels(args.old)[1] if args.old else None
    knobs = VARIANTS[args.variant]
    new = functools.partial(monarch_attention_triton, knobs=knobs) if knobs != VARIANTS["default"] else (
        monarch_attention_triton)  # the default knobs: the launcher's own path, replays included
    env, rows = environment(measure_copy=False), []
    print("\n| case | B | N | T | mask | peak / (q, k, v, out) new | old |\n|---|---|---|---|---|---|---|")
    for case in CASES:
        ours, was = measure(case, new, old)
        print(f"| {case.name} | {case.batch} | {case.seq} | {case.steps} | {case.mask} | {ours:.3f} | {was:.3f} |",
              flush=True)
        rows.append(env.stamp(Row(kernel=f"memory:{case.name}", provider="triton", dtype="float16",
                                  batch=case.batch, heads=case.heads, seq=case.seq, head_dim=case.head_dim,
                                  block=case.block, steps=case.steps, pad_frac=case.pad_frac, median_ms="",
                                  note=f"peak/(q,k,v,out) {ours:.4f}; old {was:.4f}; chunk_bytes {args.chunk_bytes}; "
                                       f"variant {args.variant}")))
        torch.cuda.empty_cache()
    print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'memory.csv')}")


if __name__ == "__main__":
    main()
