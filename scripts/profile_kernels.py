#!/usr/bin/env python
"""Launch MonarchAttention's kernels once per case, for a profiler (Nsight Compute) to capture.

    ncu --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        -k regex:'_kernel$' python scripts/profile_kernels.py tiles:1:4096 tiles:1:16384 fused:1024:256

Each argument is MODE:BATCH:SEQ[:STEPS] (12 heads, head dim 64, float16, b = ceil(sqrt(N)), no mask;
MODE is "tiles", "fused" or a variant name of ``bench_kernels.py``'s VARIANTS, see
``kernels/triton_monarch.py``). Each case runs twice: the first launch compiles, profile the second.
``resources`` prints the registers, spills and shared memory of every kernel compiled so far.

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


def main(argv: list[str]) -> None:
    from bench_kernels import VARIANTS

    for spec in argv:
        if spec == "resources":
            print_resources()
            continue
        if spec.startswith("model:"):
            _, kind, seq = spec.split(":")
            profile_model(kind, int(seq))
            continue
        mode, batch, seq, *rest = spec.split(":")
        B, N, T = int(batch), int(seq), int(rest[0]) if rest else 1
        b = math.isqrt(N - 1) + 1
        q, k, v = (torch.randn(B, 12, N, 64, device="cuda", dtype=torch.float16) for _ in range(3))
        for _ in range(2):  # compile + warm, then the launch to profile
            monarch_attention_triton(q, k, v, None, b, T, "post", 0.125, _cfg=VARIANTS.get(mode, {"mode": mode}))
        torch.cuda.synchronize()
        print("ran", spec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
