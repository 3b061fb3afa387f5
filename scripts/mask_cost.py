#!/usr/bin/env python
"""What a key-padding mask costs: one batch (8 x 4096 tokens, 12 heads, head dim 64, float16,
b = 64, T = 1) without a mask, with a mask of ones, and with 50% right padding.

    cd scripts && python mask_cost.py

Prints the CUDA-graph time of each, with programmatic dependent launch on and off, and the device
time of each kernel (``profile_kernels.kernel_times``).
"""

import torch

from bench_kernels import bench, graphed
from monarch_convert.kernels.triton_monarch import monarch_attention_triton as f
from profile_kernels import kernel_times

q, k, v = (torch.randn(8, 12, 4096, 64, device="cuda", dtype=torch.float16) for _ in range(3))
ones = torch.ones(8, 4096, dtype=torch.bool, device="cuda")
half = (torch.arange(4096, device="cuda") < 2048)[None].expand(8, 4096).contiguous()
for name, m in [("no mask", None), ("mask of ones", ones), ("50% padded", half)]:
    for pdl in (True, False):
        fn = lambda: f(q, k, v, m, 64, 1, "post", 0.125, _cfg={"pdl": pdl})  # noqa: E731
        fn()
        print(f"{name} pdl={pdl}: graph {bench(graphed(fn)):.4f} ms", flush=True)
    kernel_times(fn)
