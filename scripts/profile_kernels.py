#!/usr/bin/env python
"""Launch MonarchAttention's kernels once per case, for a profiler (Nsight Compute) to capture.

    ncu --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        -k regex:'_kernel$' python scripts/profile_kernels.py tiles:1:4096 tiles:1:16384 fused:1024:256

Each argument is MODE:BATCH:SEQ[:STEPS[:PAD]] (12 heads, head dim 64, float16, b = ceil(sqrt(N));
MODE is "tiles", "fused" or a variant name of ``bench_kernels.py``'s VARIANTS, see
``kernels/triton_monarch.py``; PAD is the fraction of right padding of every sequence, with a
key-padding mask, default none). Each case runs twice: the first launch compiles, profile the second.
``resources`` prints the registers, spills and shared memory of every kernel compiled so far.

``--times`` instead prints, per case, each kernel's device time (torch.profiler, median of 20 calls,
L2 flushed before each call, as ``triton.testing.do_bench`` does) and the gaps between kernels.

``model:KIND:SEQ`` instead prints where the host time of one eager forward of a converted encoder
goes (torch.profiler, CPU time per op; KIND: bert-base or bart-base, batch 1, float16).
"""

from __future__ import annotations

import math
import sys

import torch
from monarch_convert.kernels.triton_monarch import monarch_attention_triton


def profile_model(kind: str, seq: int) -> None:
    from bench_kernels import build_encoder

    import monarch_convert

    model, vocab = build_encoder(kind, seq)
    ids = torch.randint(4, vocab, (1, seq), device="cuda")
    monarch_convert.convert(model, block_size="auto")
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))


def print_resources() -> None:
    import monarch_convert.kernels.triton_monarch as tm

    for name in ("_r_step_kernel", "_l_sum_kernel", "_l_out_kernel", "_fused_kernel"):
        for cache in getattr(getattr(tm, name), "device_caches", {}).values():
            for kernel in cache[0].values():
                kernel._init_handles()
                md = kernel.metadata
                print(f"{name}: {kernel.n_regs} registers, {kernel.n_spills} spilled, {md.shared} B shared, "
                      f"{md.num_warps} warps, {md.num_stages} stages", flush=True)


def kernel_times(fn, calls: int = 20) -> None:
    """Print each kernel's median device time over ``calls`` calls of ``fn`` (L2 flushed before each),
    the median span from the first kernel's start to the last one's end, and their difference."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            flush.zero_()
            fn()
        torch.cuda.synchronize()
    per_call, call = [], []
    for e in sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda e: e.time_range.start):
        if "fill" in e.name or "zero" in e.name.lower() or "elementwise" in e.name:  # the L2 flush
            if call:
                per_call.append(call)
            call = []
        else:
            call.append((e.name, e.time_range.start, e.time_range.end))
    per_call.append(call)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    names = [name for name, _, _ in per_call[0]]
    total = 0.0
    for i, name in enumerate(names):
        t = med([c[i][2] - c[i][1] for c in per_call])
        total += t
        print(f"    {name:24s} {t:8.1f} us", flush=True)
    span = med([c[-1][2] - c[0][1] for c in per_call])
    print(f"    {'first start -> last end':24s} {span:8.1f} us ({span - total:.1f} us between kernels)", flush=True)


def main(argv: list[str]) -> None:
    from bench_kernels import VARIANTS

    times = "--times" in argv
    for spec in argv:
        if spec == "--times":
            continue
        if spec == "resources":
            print_resources()
            continue
        if spec.startswith("model:"):
            _, kind, seq = spec.split(":")
            profile_model(kind, int(seq))
            continue
        mode, batch, seq, *rest = spec.split(":")
        B, N = int(batch), int(seq)
        T = int(rest[0]) if rest else 1
        pad = float(rest[1]) if len(rest) > 1 else 0.0
        b = math.isqrt(N - 1) + 1
        q, k, v = (torch.randn(B, 12, N, 64, device="cuda", dtype=torch.float16) for _ in range(3))
        mask = None
        if pad:
            mask = (torch.arange(N, device="cuda") < round(N * (1 - pad)))[None].expand(B, N).contiguous()
        cfg = VARIANTS.get(mode, {"mode": mode})
        fn = lambda: monarch_attention_triton(q, k, v, mask, b, T, "post", 0.125, _cfg=cfg)  # noqa: E731
        for _ in range(2):  # compile + warm, then the launch to profile
            fn()
        torch.cuda.synchronize()
        print("ran", spec, flush=True)
        if times:
            kernel_times(fn)


if __name__ == "__main__":
    main(sys.argv[1:])
