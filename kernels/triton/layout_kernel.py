"""The key-padding layout inside the first kernel of a masked call: the same placement as
``kernels/layout.py: sequence_layout`` (whose sort-based version takes many launches), computed by
each program for its own sequence, so that a masked call needs no launch of its own for it.

Every program of the first grid reads its sequence's mask row once: the length, and the first and
last real positions. It writes the length and the pre-padding offset for the later grids (every
program of the sequence writes the same values), and the token index of the ranks its own slots
hold: ``first + rank`` where the real tokens are contiguous (right or left padding), else from a
prefix sum over the row. It reads them back after a barrier (a CTA sees its own global writes), so
the tile code is the same in every grid.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mask_extent(row, stride_mn, N, CH: tl.constexpr):
    """(real tokens, first real position, last real position) of one mask row."""
    x = tl.arange(0, CH)
    zero = tl.sum(x * 0, 0)
    total = zero
    first = zero + N
    last = zero - 1
    for n0 in range(0, N, CH):
        n = n0 + x
        real = tl.load(row + n * stride_mn, mask=n < N, other=0) != 0
        total += tl.sum(real.to(tl.int32), 0)
        first = tl.minimum(first, tl.min(tl.where(real, n, N), 0))
        last = tl.maximum(last, tl.max(tl.where(real, n, -1), 0))
    return total, first, last


@triton.jit
def _sequence_layout(mask_ptr, stride_mb, stride_mn, seq, bi, N, b, slot_lo, slot_hi, PRE: tl.constexpr,
                     CH: tl.constexpr):
    """Length and pre-padding offset of sequence ``bi`` (written to ``seq[0]``, ``seq[1]``), and its
    token index (``seq[2]``, row ``bi``) for the ranks that slots ``[slot_lo, slot_hi)`` hold."""
    bi64 = bi.to(tl.int64)
    row = mask_ptr + bi64 * stride_mb
    L, first, last = _mask_extent(row, stride_mn, N, CH)
    if PRE:
        off = ((L + b - 1) // b) * b - L
    else:
        off = L * 0
    tl.store(seq[0] + bi64, L.to(tl.int64))
    tl.store(seq[1] + bi64, off.to(tl.int64))
    x = tl.arange(0, CH)
    tok = seq[2] + bi64 * N
    r_lo = tl.maximum(slot_lo - off, 0)
    r_hi = tl.minimum(slot_hi - off, L)
    if last - first + 1 == L:  # contiguous (or empty): rank r is at first + r
        for r0 in range(r_lo, r_hi, CH):
            r = r0 + x
            tl.store(tok + r, (first + r).to(tl.int64), mask=r < r_hi)
    else:  # rank of each real position from a prefix sum over the row
        total = L * 0
        for n0 in range(0, N, CH):
            n = n0 + x
            real = tl.load(row + n * stride_mn, mask=n < N, other=0).to(tl.int32)
            rank = tl.cumsum(real, 0) - 1 + total
            tl.store(tok + rank, n.to(tl.int64), mask=(real != 0) & (rank >= r_lo) & (rank < r_hi))
            total += tl.sum(real, 0)
    tl.debug_barrier()
