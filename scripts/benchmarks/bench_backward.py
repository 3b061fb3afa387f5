#!/usr/bin/env python
"""Forward + backward of MonarchAttention's Triton kernels against PyTorch SDPA's flash, cuDNN and
efficient backends, and each one's peak memory.

    python scripts/benchmarks/bench_backward.py [--seqs 1024 4096 16384] [--steps 1 2] [--out FILE]
    python scripts/benchmarks/bench_backward.py --profile [--seqs ...]  # + each kernel's time per call
    python scripts/benchmarks/bench_backward.py --smoke [--out FILE]    # CPU, Triton's interpreter

One call is ``torch.autograd.grad`` of the op's output (float16, 12 heads, head dim 64, batch 1,
``b = ceil(sqrt(N))``) for a fixed random output gradient, with respect to q, k and v: the forward and
the backward. Its median time comes from ``triton.testing.do_bench`` (L2 flushed before each run),
eager and as the replay of a CUDA graph that captured the call (the GPU time plus launch gaps); the
speed-ups compare with the fastest SDPA backend of the same run, eager with eager and graphed with
graphed. Where the time goes: ``host_us``, the median host time to issue one eager call (no
synchronisation inside it), and ``kernel_us``, the sum of the call's kernel times
(``torch.profiler``, no L2 flush; measured once every case is timed, ``add_kernel_times``). Peak
memory is the most allocated during one call beyond the inputs
(``torch.cuda.max_memory_allocated``). Writes one CSV row per (case, provider) and prints a table.

``--smoke`` runs tiny float32 cases on the CPU in Triton's interpreter, with the reference's
autograd in place of SDPA, and checks that the kernels' gradients equal the reference's: it shows
the script works, not how fast anything is.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

if "--smoke" in sys.argv:  # before anything imports triton: the interpreter is chosen then
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from bench_utils import SDPA_BACKENDS, bench, commit, graphed, sdpa_fn, versions, wall_ms  # noqa: E402


@dataclass
class BackwardRow:
    """One provider on one case: median ms of forward + backward, and the peak memory of one call
    beyond its inputs (empty on the CPU)."""

    provider: str
    dtype: str
    batch: int
    heads: int
    seq: int
    head_dim: int
    block: int
    steps: int
    median_ms: str
    speedup_vs_best_sdpa: str
    best_sdpa: str
    peak_mib: str
    graphed_ms: str
    graphed_speedup_vs_best_sdpa: str
    best_sdpa_graphed: str
    host_us: str
    kernel_us: str
    device: str
    versions: str
    commit: str
    date: str = dataclasses.field(default_factory=lambda: datetime.date.today().isoformat())


@dataclass(frozen=True)
class Setup:
    """Sizes shared by the cases of a run."""

    device: str
    dtype: torch.dtype
    batch: int
    heads: int
    head_dim: int


def inputs(s: Setup, N: int, seed: int = 0):
    g = torch.Generator(device=s.device).manual_seed(seed)
    q, k, v, grad = (torch.randn(s.batch, s.heads, N, s.head_dim, device=s.device, dtype=s.dtype, generator=g)
                     for _ in range(4))
    return [x.requires_grad_() for x in (q, k, v)], grad


def providers(s: Setup, xs, grad, block: int, steps: int) -> dict:
    """name -> a function running forward + backward and returning (dq, dk, dv)."""
    from monarch_convert.kernels.ops import monarch_attention

    def grads(forward):
        return lambda: torch.autograd.grad(forward(), xs, grad)

    out = {"monarch": grads(lambda: monarch_attention(*xs, block_size=block, num_steps=steps, backend="triton"))}
    if s.device == "cpu":
        out["reference"] = grads(lambda: monarch_attention(*xs, block_size=block, num_steps=steps, backend="torch"))
    else:
        for be in SDPA_BACKENDS:
            out[be] = grads(sdpa_fn(be, *xs))
    return out


def median_ms(fn, device: str, reps: int) -> float:
    if device != "cpu":
        return bench(fn)
    return wall_ms(fn, reps)


def peak_mib(fn, device: str) -> str:
    if device == "cpu":
        return ""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.1f}"


def host_us(fn, calls: int = 50) -> float:
    """Median host time (µs) to issue one call, the GPU idle before each (synchronised outside)."""
    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def kernels_per_call(fn, calls: int = 20) -> dict:
    """Each kernel's name -> (launches, total device µs) per call, from ``torch.profiler``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out: dict = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            n, us = out.get(e.name, (0, 0.0))
            out[e.name] = (n + 1 / calls, us + (e.time_range.end - e.time_range.start) / calls)
    return out


def measure(name: str, fn, s: Setup, reps: int) -> dict:
    """The provider's numbers on one case: eager and graphed ms, host µs, peak MiB."""
    got = dict(eager=median_ms(fn, s.device, reps), peak=peak_mib(fn, s.device))
    if s.device == "cpu":
        return got
    got["host"] = host_us(fn)
    try:
        got["graphed"] = bench(graphed(fn))
    except Exception as e:  # a provider that cannot be captured: say so, keep the eager numbers
        print(f"    {name}: no CUDA graph: {type(e).__name__}: {str(e).splitlines()[0][:100]}", file=sys.stderr)
    return got


@dataclass
class Timed:
    """One case's providers (``fns``) and their numbers (``results``, by provider)."""

    N: int
    steps: int
    block: int
    fns: dict
    results: dict


def add_kernel_times(t: Timed, profile: bool) -> None:
    """Each provider's ``kernel`` µs per call, from torch.profiler; ``profile``: print each kernel's.
    Run once every case is timed: after a profiler session every launch of the process costs more
    host time (docs/benchmarks-log.md, "Diagnostic round of 2026-12-07"), which until code a4d7fe0
    inflated the eager and host columns of every provider timed after the first."""
    for name, fn in t.fns.items():
        per_kernel = kernels_per_call(fn)
        t.results[name]["kernel"] = sum(us for _, us in per_kernel.values())
        if profile:
            for kname, (n, us) in sorted(per_kernel.items(), key=lambda x: -x[1][1]):
                print(f"    N={t.N} T={t.steps} {name}: {us:8.1f} µs  x{n:.0f}  {kname[:90]}")


def _ratio(times: dict, kind: str, name: str) -> tuple[str, str]:
    sdpa = {p: t[kind] for p, t in times.items() if p in SDPA_BACKENDS and kind in t}
    if not sdpa or kind not in times[name]:
        return "", ""
    best = min(sdpa, key=sdpa.get)
    return f"{sdpa[best] / times[name][kind]:.3f}", best


def time_case(s: Setup, N: int, steps: int, reps: int, only: list | None = None) -> Timed:
    block = math.isqrt(N - 1) + 1
    xs, grad = inputs(s, N)
    fns = {p: fn for p, fn in providers(s, xs, grad, block, steps).items() if not only or p in only}
    results, reference = {}, None
    for name, fn in fns.items():
        try:
            got = fn()  # warm-up (compiles the kernels)
        except Exception as e:  # a backend that does not support the case
            print(f"  N={N} T={steps} {name}: {type(e).__name__}: {str(e).splitlines()[0][:100]}", file=sys.stderr)
            continue
        if name == "monarch":
            reference = got
        elif s.device == "cpu":  # --smoke: the kernels' gradients are the reference's
            for a, b in zip(reference, got):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        results[name] = measure(name, fn, s, reps)
    return Timed(N, steps, block, {name: fns[name] for name in results}, results)


def rows_of(s: Setup, t: Timed, stamp: dict) -> list[BackwardRow]:
    rows = []
    for name, r in t.results.items():
        (x, best), (xg, best_g) = _ratio(t.results, "eager", name), _ratio(t.results, "graphed", name)
        fmt = lambda key, f: format(r[key], f) if key in r else ""  # noqa: E731
        rows.append(BackwardRow(name, str(s.dtype)[6:], s.batch, s.heads, t.N, s.head_dim, t.block, t.steps,
                                f"{r['eager']:.5f}", x, best, r["peak"], fmt("graphed", ".5f"), xg, best_g,
                                fmt("host", ".1f"), fmt("kernel", ".1f"), **stamp))
    return rows


def print_table(rows: list[BackwardRow]) -> None:
    print("\n| N | b | T | monarch ms | best SDPA ms | x | graphed ms | best SDPA graphed ms | x graphed "
          "| host µs | kernel µs | SDPA host µs | SDPA kernel µs | peak MiB | SDPA peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.provider != "monarch":
            continue
        same = {x.provider: x for x in rows if (x.seq, x.steps) == (r.seq, r.steps)}
        best, best_g = same.get(r.best_sdpa), same.get(r.best_sdpa_graphed)
        get = lambda x, f: getattr(x, f) if x else "-"  # noqa: E731
        print(f"| {r.seq} | {r.block} | {r.steps} | {r.median_ms} | {get(best, 'median_ms')} ({r.best_sdpa or '-'}) "
              f"| {r.speedup_vs_best_sdpa or '-'} | {r.graphed_ms or '-'} | {get(best_g, 'graphed_ms')} "
              f"({r.best_sdpa_graphed or '-'}) | {r.graphed_speedup_vs_best_sdpa or '-'} | {r.host_us or '-'} "
              f"| {r.kernel_us or '-'} | {get(best, 'host_us')} | {get(best, 'kernel_us')} | {r.peak_mib or '-'} "
              f"| {get(best, 'peak_mib')} |")


def write_csv(rows: list[BackwardRow], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[x.name for x in dataclasses.fields(BackwardRow)])
        w.writeheader()
        w.writerows(dataclasses.asdict(r) for r in rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny float32 cases on the CPU (Triton's interpreter)")
    p.add_argument("--profile", action="store_true", help="print each kernel's device time per call")
    p.add_argument("--only", nargs="+", default=None, help="providers to time (default: all)")
    p.add_argument("--out", default=None, help="CSV file (default: bench_backward.csv in $OUT or .)")
    args = p.parse_args(argv)
    if args.smoke:
        s, seqs, reps = Setup("cpu", torch.float32, 1, 2, 16), [40], 1
    elif torch.cuda.is_available():
        s, seqs, reps = Setup("cuda", torch.float16, args.batch, 12, 64), args.seqs, 0
    else:
        sys.exit("bench_backward.py needs a CUDA GPU (or --smoke)")
    device = "cpu (Triton interpreter)" if args.smoke else torch.cuda.get_device_name()
    stamp = dict(device=device, versions=versions(), commit=commit())
    # A busy host (e.g. test workers left running) inflates the eager and host columns: say how busy.
    print(f"{device}; {stamp['versions']}; commit {stamp['commit']}; host load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    timed: list[Timed] = []
    try:
        for N in seqs:
            for steps in args.steps:
                timed.append(time_case(s, N, steps, reps, args.only))
        if s.device == "cuda":
            for t in timed:
                add_kernel_times(t, args.profile)
    finally:
        rows = [row for t in timed for row in rows_of(s, t, stamp)]
        path = args.out or os.path.join(os.environ.get("OUT", "."), "bench_backward.csv")
        write_csv(rows, path)
        print(f"{len(rows)} rows -> {path}")
        print_table(rows)


if __name__ == "__main__":
    main()
