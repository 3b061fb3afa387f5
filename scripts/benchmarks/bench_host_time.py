#!/usr/bin/env python
"""Host time of one eager call: what a converted model pays per attention module before the GPU
does any work. Measured two ways, median of 7 rounds of 60 calls each, after warm-up (the first call
of a signature compiles and records; its cost is reported separately):

- host only: the calls are issued while the GPU is held busy by a sleep kernel queued before them,
  so no call ever waits for the device: the pure cost of issuing them (the round is repeated with a
  longer sleep if the device ran dry before its last call);
- back to back: calls with no synchronisation in between on an idle GPU, the way this script
  measured until code 18346f6: where a call's device time is longer than its host time, the
  device time.

Run it in a process that has not run ``torch.profiler``: after a profiler session every launch
costs more host time (docs/benchmarks-log.md, "Diagnostic round of 2026-12-07").

    python scripts/benchmarks/bench_host_time.py [--batches 1 8] [--seqs 512 4096] [--old FOLDER] [--csv FILE]

Compares ``monarch_attention`` (public entry point, backend "triton") with SDPA at the same
shapes (with the same key mask as a broadcast boolean mask when there is one), and prints, for
scale, one trivial Triton launch and one ``torch.add_``. Float16, 12 heads, head dim 64,
b = ceil(sqrt(N)), q/k/v as transformers passes them ((B, N, H, d) transposed)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from bench_utils import Case, Row, environment, write_csv


def host_us(fn, calls: int = 60, rounds: int = 7) -> float:
    """Median µs per call of ``calls`` calls issued while the device is held busy (host only)."""
    fn()
    fn()
    torch.cuda.synchronize()
    per_call, cycles = [], 20_000_000  # about 10 ms of sleep at 2 GHz
    stream = torch.cuda.current_stream()
    while len(per_call) < rounds:
        torch.cuda._sleep(cycles)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - t0
        # The sleep ended before the last call was issued: the round may have waited for the device
        # (a longer sleep is tried; a call that synchronises drains any sleep, and is kept as measured).
        drained = stream.query()
        torch.cuda.synchronize()
        if drained and cycles < 16 * 20_000_000:
            cycles *= 2
            continue
        per_call.append(elapsed / calls * 1e6)
    return statistics.median(per_call)


def back_to_back_us(fn, calls: int = 60, rounds: int = 7) -> float:
    """Median µs per call of ``calls`` calls with no synchronisation on an idle device."""
    fn()
    fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) / calls * 1e6)
        torch.cuda.synchronize()
    return statistics.median(per_call)


def scale_rows() -> list[tuple[str, float]]:
    import triton
    import triton.language as tl

    @triton.jit
    def one(x_ptr, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)

    x = torch.zeros(128, device="cuda")
    return [("torch.add_", host_us(lambda: x.add_(1))),
            ("trivial Triton kernel launch", host_us(lambda: one[(1,)](x, 100, BLOCK=128)))]


def first_call_us(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e6


def old_entry(folder: str):
    """``monarch_attention`` of the ops module in ``folder``'s kernels/ (imported as ``_old_kernels``)."""
    import importlib

    from compare_versions import import_kernels

    import_kernels(folder)
    return importlib.import_module("_old_kernels.ops").monarch_attention


def main(argv=None) -> None:
    from monarch_convert.kernels.ops import monarch_attention

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--seqs", nargs="+", type=int, default=[512, 1024, 4096])
    p.add_argument("--old", default=None, help="also time another version's ops (compare_versions.py's folder)")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_host_time.py needs a CUDA GPU")
    old = old_entry(args.old) if args.old else None
    env, rows = environment(measure_copy=False), []
    for name, us in scale_rows():
        print(f"{name:40s} {us:7.1f} us", flush=True)
    print("\n| B | N | T | mask | monarch_attention us | back to back us | old us | SDPA us | first call ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B in args.batches:
        for N in args.seqs:
            for T in (1, 2):
                for masked in (False, True):
                    case = Case("host", B, N, steps=T, mask="pad" if masked else "none", pad_frac=0.25 * masked)
                    q, k, v, mask, _ = case.inputs()
                    q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
                    kw = dict(block_size=case.block, num_steps=T, backend="triton")
                    fn = lambda: monarch_attention(q, k, v, mask, **kw)  # noqa: E731
                    first = first_call_us(fn) / 1e3
                    ours, ours_b2b = host_us(fn), back_to_back_us(fn)
                    was = host_us(lambda: old(q, k, v, mask, **kw)) if old else float("nan")
                    sdpa_mask = None if mask is None else mask[:, None, None, :]
                    sdpa = host_us(lambda: torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, attn_mask=sdpa_mask))
                    print(f"| {B} | {N} | {T} | {'yes' if masked else 'no'} | {ours:.1f} | {ours_b2b:.1f} "
                          f"| {was:.1f} | {sdpa:.1f} | {first:.1f} |", flush=True)
                    for prov, us in (("monarch", ours), ("monarch-old", was), ("sdpa", sdpa)):
                        rows.append(env.stamp(Row(kernel="host-time", provider=prov, dtype="float16", batch=B,
                                                  heads=12, seq=N, head_dim=64, block=case.block, steps=T,
                                                  pad_frac=case.pad_frac, median_ms=f"{us / 1e3:.5f}",
                                                  note="host time per eager call, issued while the device is busy"
                                                  + (f"; back to back on an idle device {ours_b2b:.1f} us"
                                                     if prov == "monarch" else ""))))
    print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'host_time.csv')}")


if __name__ == "__main__":
    main()
