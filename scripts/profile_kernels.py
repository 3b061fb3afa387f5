#!/usr/bin/env python
"""Launch MonarchAttention's kernels once per case, for a profiler (Nsight Compute) to capture.

    ncu --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        -k regex:'_kernel$' python scripts/profile_kernels.py tiles:1:4096 tiles:1:16384 stream:1:16384

Each argument is MODE:BATCH:SEQ[:STEPS] (12 heads, head dim 64, float16, b = ceil(sqrt(N)), no mask).
Kernels are compiled and run once before the profiled launch (use ``--launch-skip`` accordingly, or
``NVTX``-free filtering on the second launch of each kernel).
"""

from __future__ import annotations

import math
import sys

import torch

from monarch_convert.kernels.triton_monarch import monarch_attention_triton


def main(argv: list[str]) -> None:
    for spec in argv:
        mode, batch, seq, *rest = spec.split(":")
        B, N, T = int(batch), int(seq), int(rest[0]) if rest else 1
        b = math.isqrt(N - 1) + 1
        q, k, v = (torch.randn(B, 12, N, 64, device="cuda", dtype=torch.float16) for _ in range(3))
        for _ in range(2):  # compile + warm, then the launch to profile
            monarch_attention_triton(q, k, v, None, b, T, "post", 0.125, _cfg={"mode": mode})
        torch.cuda.synchronize()
        print("ran", spec, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
