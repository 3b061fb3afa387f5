"""The key-padding layout on the GPU in one launch: the same placement as
``kernels/layout.py: sequence_layout`` (whose sort-based version takes many launches)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _layout_kernel(mask_ptr, stride_mb, stride_mn, tok_ptr, len_ptr, off_ptr, N, b, PRE: tl.constexpr,
                   CH: tl.constexpr):
    """One program per sequence: its token index (real positions in order), length, and
    pre-padding offset, in chunks of CH positions."""
    bi = tl.program_id(0).to(tl.int64)
    x = tl.arange(0, CH)
    total = tl.sum(x * 0, 0)
    for n0 in range(0, N, CH):
        n = n0 + x
        real = tl.load(mask_ptr + bi * stride_mb + n * stride_mn, mask=n < N, other=0).to(tl.int32)
        rank = tl.cumsum(real, 0) - 1 + total
        tl.store(tok_ptr + bi * N + rank, n.to(tl.int64), mask=(real != 0) & (n < N))
        total += tl.sum(real, 0)
    tl.store(len_ptr + bi, total.to(tl.int64))
    if PRE:
        tl.store(off_ptr + bi, (((total + b - 1) // b) * b - total).to(tl.int64))
    else:
        tl.store(off_ptr + bi, (total * 0).to(tl.int64))
