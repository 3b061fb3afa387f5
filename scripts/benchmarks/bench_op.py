#!/usr/bin/env python
"""MonarchAttention's kernels against PyTorch SDPA's flash, cuDNN and efficient backends.

    python scripts/benchmarks/bench_op.py [--quick] [--cases paper-long T2] [--variants onchip fused] [--csv FILE]

Each case (``CASES``: float16 unless named, 12 heads, head dim 64, b = ceil(sqrt(N))) is timed
eager and as CUDA-graph replays, median of ``triton.testing.do_bench``. Speed-ups compare eager
with eager and graph with graph against the fastest SDPA backend of the same run. The floor is
reading q, k, v and writing the output once (real tokens only) at the copy bandwidth measured in
the same run. ``--variants``: also the launcher under these knob sets (``bench_utils.VARIANTS``), as
providers ``triton:<name>``, e.g. the on-chip, fused and tiled strategies against each other and
SDPA. Prints a table; writes CSV rows (``bench_utils.Row``).
"""

from __future__ import annotations

import argparse
import sys

import torch
from bench_utils import SDPA_BACKENDS, VARIANTS, Case, bench, environment, graphed, sdpa_fn, selected, write_csv

BF16 = torch.bfloat16
CASES = (
    [Case("paper-short", B, 256) for B in (8, 64, 256, 1024, 4096)]
    + [Case("short-512", B, 512) for B in (64, 256)]
    + [Case("paper-long", 1, N) for N in (1024, 2048, 4096, 8192, 16384)]
    + [Case("T2-short", B, 256, steps=2) for B in (256, 1024)]
    + [Case("padded-short-30%", 1024, 256, pad_frac=0.3, mask="pad")]
    + [Case("T2-long", 1, N, steps=2) for N in (1024, 4096, 16384)]
    + [Case("bf16-short", 1024, 256, dtype=BF16)] + [Case("bf16-long", 1, N, dtype=BF16) for N in (4096, 16384)]
    + [Case("unpadded", 8, 4096), Case("ones-mask", 8, 4096, mask="ones"),
       Case("padded-50%", 8, 4096, pad_frac=0.5, mask="pad")]
)
QUICK = {("paper-short", 1024), ("paper-long", 4096), ("paper-long", 16384), ("T2-long", 16384), ("padded-50%", 8)}


def providers(case: Case, q, k, v, mask, reference: bool, variants=()) -> dict:
    from monarch_convert.kernels.ops import monarch_attention
    from monarch_convert.kernels.triton.launch import monarch_attention_triton

    b, T = case.block, case.steps
    out = {"triton": lambda: monarch_attention(q, k, v, mask, block_size=b, num_steps=T, backend="triton")}
    for name in variants:  # the launcher itself: the knobs go through it (no replays, as bench_variants.py)
        out[f"triton:{name}"] = lambda kn=VARIANTS[name]: monarch_attention_triton(
            q, k, v, mask, b, T, "post", case.head_dim ** -0.5, knobs=kn)
    if reference and case.batch * case.heads * case.seq <= 12 * 16384 * 16:
        out["torch"] = lambda: monarch_attention(q, k, v, mask, block_size=b, num_steps=T, backend="torch")
    for be in SDPA_BACKENDS:
        if mask is None or be != "flash":  # flash takes no mask
            out[be] = sdpa_fn(be, q, k, v, mask)
    return out


def time_case(case: Case, env, reference: bool, variants=()) -> list:
    q, k, v, mask, n_real = case.inputs()
    times = {}
    for name, fn in providers(case, q, k, v, mask, reference, variants).items():
        try:
            fn()
            torch.cuda.synchronize()
            times[name] = bench(fn)
            if name != "torch":  # the same work replayed from a CUDA graph: no launch overhead
                times[name + "+graph"] = bench(graphed(fn))
        except Exception as e:  # a backend that does not support the case
            print(f"  {case.name} B={case.batch} N={case.seq} {name}: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:100]}", file=sys.stderr)
    rows = []
    for name, ms in times.items():
        suffix = "+graph" if name.endswith("+graph") else ""
        sdpa = {p: t for p, t in times.items() if p in [x + suffix for x in SDPA_BACKENDS]}
        best = min(sdpa, key=sdpa.get) if sdpa else ""
        rows.append(case.row(case.name, name, ms, env, n_real, best_sdpa=best,
                             speedup_vs_best_sdpa=f"{sdpa[best] / ms:.3f}" if best else ""))
    return rows


def print_table(rows) -> None:
    print("\n| case | dtype | B | N | b | T | triton ms | best SDPA ms | x (eager) | triton graph ms "
          "| best SDPA graph ms | x (graph) | floor fraction (graph) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    keys = list(dict.fromkeys((r.kernel, r.dtype, r.batch, r.seq, r.steps) for r in rows))
    for key in keys:
        by = {r.provider: r for r in rows if (r.kernel, r.dtype, r.batch, r.seq, r.steps) == key}
        for name in [p for p in by if p.startswith("triton") and not p.endswith("+graph")]:
            t, g = by[name], by.get(name + "+graph")
            if g is None:
                continue
            best, best_g = by.get(t.best_sdpa), by.get(g.best_sdpa)
            print(f"| {key[0]}{name[6:]} | {key[1]} | {key[2]} | {key[3]} | {t.block} | {key[4]} | {t.median_ms} | "
                  f"{best.median_ms if best else '-'} ({t.best_sdpa}) | {t.speedup_vs_best_sdpa} | {g.median_ms} | "
                  f"{best_g.median_ms if best_g else '-'} | {g.speedup_vs_best_sdpa} | {g.floor_fraction} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", metavar="NAME", help="only the cases whose name contains one of these")
    p.add_argument("--quick", action="store_true", help="a few cases")
    p.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference provider")
    p.add_argument("--variants", nargs="+", default=[], choices=sorted(VARIANTS), metavar="NAME",
                   help="also the launcher under these knob sets (bench_utils.VARIANTS), e.g. onchip fused tiles")
    p.add_argument("--csv", default=None, help="CSV file (default: bench_kernels.csv in $OUT or .)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_op.py needs a CUDA GPU")
    env = environment()
    print(f"{env.gpu}; {env.versions}; commit {env.commit}; copy bandwidth {env.copy_gbps:.0f} GB/s", flush=True)
    cases = [c for c in selected(list(CASES), args.cases) if not args.quick or (c.name, c.batch) in QUICK
             or (c.name, c.seq) in QUICK]
    rows = []
    try:
        for case in cases:
            rows += time_case(case, env, not args.no_reference, args.variants)
            torch.cuda.empty_cache()
    finally:
        print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'bench_kernels.csv')}")
        print_table(rows)


if __name__ == "__main__":
    main()
