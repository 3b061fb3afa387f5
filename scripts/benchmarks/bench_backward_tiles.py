#!/usr/bin/env python
"""Row chunks, warps and pipeline stages of the backward's kernels, timed: for each kernel and
configuration, the forward + backward of one call (CUDA-graph replay, ``triton.testing.do_bench``
median) and that kernel's own time per call (``torch.profiler``), at each N.

    python scripts/benchmarks/bench_backward_tiles.py [--seqs 4096 16384] [--kernels _r_bwd _l_bwd]
        [--rows 16 32 64] [--warps 4 8 16] [--stages 1 3] [--warm-only] [--out FILE]

``--warm-only`` runs each configuration once and times nothing: run several of those at once (one
per kernel) to compile in parallel into Triton's cache, then one timing run. Float16, batch 1, 12
heads, head dim 64, ``b = ceil(sqrt(N))``, T = 1. The row "default" is ``backward_launch.tile``'s
own choice. One CSV row per (N, kernel, configuration); a table is printed last.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import sys

import torch
from bench_backward import Setup, inputs, kernels_per_call
from bench_utils import bench, commit, graphed, versions

FIELDS = ("seq", "kernel", "rows", "warps", "stages", "graphed_ms", "kernel_us", "device", "versions", "commit")


def configs(a) -> list[tuple]:
    """(kernel, rows, warps, stages) to run: each kernel's default (None) and the grid asked for."""
    grid = list(itertools.product(a.rows, a.warps, a.stages))
    return [(k, None) for k in a.kernels] + [(k, c) for k in a.kernels for c in grid]


def run_config(N: int, kernel: str, cfg, warm_only: bool) -> dict:
    """Time (or only compile) one configuration of ``kernel`` at N, the other kernels at their
    defaults."""
    from monarch_convert.kernels.ops import monarch_attention
    from monarch_convert.kernels.triton import backward_launch as bl

    bl.TILE_OVERRIDES.clear()
    bl.REPLAYS.clear()
    if cfg is not None:
        bl.TILE_OVERRIDES[kernel] = cfg
    xs, grad = inputs(Setup("cuda", torch.float16, 1, 12, 64), N)
    block = math.isqrt(N - 1) + 1

    def fn():
        return torch.autograd.grad(monarch_attention(*xs, block_size=block, backend="triton"), xs, grad)

    fn()
    if warm_only:
        torch.cuda.synchronize()
        return {}
    mine = sum(us for name, (_, us) in kernels_per_call(fn).items() if kernel + "_kernel" in name)
    return {"graphed_ms": f"{bench(graphed(fn)):.5f}", "kernel_us": f"{mine:.1f}"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", type=int, nargs="+", default=[4096, 16384])
    # (``_r_fwd`` runs at T = 1 only where the forward kept nothing: docs/algorithm.md, section 9.)
    p.add_argument("--kernels", nargs="+", default=["_r_bwd", "_l_bwd"])
    p.add_argument("--rows", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--warps", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--stages", type=int, nargs="+", default=[1, 3])
    p.add_argument("--warm-only", action="store_true", help="compile every configuration, time nothing")
    p.add_argument("--out", default=None, help="CSV file (default: bench_backward_tiles.csv in $OUT or .)")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_backward_tiles.py needs a CUDA GPU")
    stamp = {"device": torch.cuda.get_device_name(), "versions": versions(), "commit": commit()}
    rows = []
    for N, (kernel, cfg) in itertools.product(a.seqs, configs(a)):
        try:
            got = run_config(N, kernel, cfg, a.warm_only)
        except Exception as e:  # a configuration that does not compile (resources): say so, go on
            print(f"N={N} {kernel} {cfg}: {type(e).__name__}: {str(e).splitlines()[0][:100]}", file=sys.stderr)
            continue
        if not a.warm_only:
            rows.append(dict(seq=N, kernel=kernel, **dict(zip(("rows", "warps", "stages"), cfg or ("default",) * 3)),
                             **got, **stamp))
    if a.warm_only:
        return
    out = a.out or os.path.join(os.environ.get("OUT", "."), "bench_backward_tiles.csv")
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    print("\n| N | kernel | rows | warps | stages | fwd+bwd graphed ms | kernel µs |\n|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["seq"], r["kernel"], float(r["kernel_us"]))):
        print(f"| {r['seq']} | {r['kernel']} | {r['rows']} | {r['warps']} | {r['stages']} | {r['graphed_ms']} "
              f"| {r['kernel_us']} |")


if __name__ == "__main__":
    main()
