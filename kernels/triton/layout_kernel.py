"""The key-padding layout on the GPU: the same placement as ``kernels/layout.py: sequence_layout``
(whose sort-based version takes many launches), in one of two places (``plan.LaunchPlan.layout_in_grid``):

* ``_layout_kernel``: a launch of its own, one program per sequence;
* ``_sequence_layout``: inside the first grid of the call, where each program lays out its own
  sequence. That saves a launch (host time of small calls) but costs every program of the grid a
  pass over its mask row, so it is chosen only for grids of about one wave.

The in-grid version reads the mask row once for the length and the first and last real positions,
writes the length and pre-padding offset for the later grids (every program of the sequence writes
the same values), and the token index of the ranks its own slots hold: ``first + rank`` where the
real tokens are contiguous (right or left padding), else from a prefix sum over the row. It reads
them back after a barrier (a CTA sees its own global writes), so the tile code is the same in every
grid.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _scatter_ranks(row, stride_mn, tok, N, r_lo, r_hi, CH: tl.constexpr):
    """Write the position of the real tokens of ranks [r_lo, r_hi) of one mask row to ``tok``, by a
    prefix sum over the row in chunks of CH; returns the number of real tokens."""
    x = tl.arange(0, CH)
    total = tl.sum(x * 0, 0)
    for n0 in range(0, N, CH):
        n = n0 + x
        real = tl.load(row + n * stride_mn, mask=n < N, other=0).to(tl.int32)
        rank = tl.cumsum(real, 0) - 1 + total
        tl.store(tok + rank, n.to(tl.int64), mask=(real != 0) & (n < N) & (rank >= r_lo) & (rank < r_hi))
        total += tl.sum(real, 0)
    return total


@triton.jit
def _store_length(seq, bi64, L, b, PRE: tl.constexpr):
    """Store sequence ``bi64``'s length and pre-padding offset; returns the offset."""
    if PRE:
        off = ((L + b - 1) // b) * b - L
    else:
        off = L * 0
    tl.store(seq[0] + bi64, L.to(tl.int64))
    tl.store(seq[1] + bi64, off.to(tl.int64))
    return off


@triton.jit
def _layout_kernel(mask_ptr, tok_ptr, len_ptr, off_ptr, stride_mb, stride_mn, N, b, PRE: tl.constexpr,
                   CH: tl.constexpr):
    """One program per sequence: its token index (real positions in order), length, and
    pre-padding offset, in chunks of CH positions. (Pointers first: what ``replay.py`` replays.)"""
    bi = tl.program_id(0).to(tl.int64)
    L = _scatter_ranks(mask_ptr + bi * stride_mb, stride_mn, tok_ptr + bi * N, N, 0, N, CH)
    _store_length((len_ptr, off_ptr), bi, L, b, PRE)


@triton.jit
def _extent_combine(c0, f0, l0, c1, f1, l1):
    return c0 + c1, tl.minimum(f0, f1), tl.maximum(l0, l1)


@triton.jit
def _mask_extent(row, stride_mn, N, CH: tl.constexpr):
    """(real tokens, first real position, last real position) of one mask row: one reduction of
    the three per chunk of CH positions."""
    x = tl.arange(0, CH)
    zero = tl.sum(x * 0, 0)
    total = zero
    first = zero + N
    last = zero - 1
    for n0 in range(0, N, CH):
        n = n0 + x
        real = tl.load(row + n * stride_mn, mask=n < N, other=0) != 0
        c, f, e = tl.reduce((real.to(tl.int32), tl.where(real, n, N), tl.where(real, n, -1)), 0, _extent_combine)
        total += c
        first = tl.minimum(first, f)
        last = tl.maximum(last, e)
    return total, first, last


@triton.jit
def _sequence_layout(mask_ptr, stride_mb, stride_mn, seq, bi, N, b, slot_lo, slot_hi, PRE: tl.constexpr,
                     CH: tl.constexpr):
    """Length and pre-padding offset of sequence ``bi`` (written to ``seq[0]``, ``seq[1]``), and its
    token index (``seq[2]``, row ``bi``) for the ranks that slots ``[slot_lo, slot_hi)`` hold."""
    bi64 = bi.to(tl.int64)
    row = mask_ptr + bi64 * stride_mb
    L, first, last = _mask_extent(row, stride_mn, N, CH)
    off = _store_length(seq, bi64, L, b, PRE)
    tok = seq[2] + bi64 * N
    r_lo = tl.maximum(slot_lo - off, 0)
    r_hi = tl.minimum(slot_hi - off, L)
    if last - first + 1 == L:  # contiguous (or empty): rank r is at first + r
        x = tl.arange(0, CH)
        for r0 in range(r_lo, r_hi, CH):
            r = r0 + x
            tl.store(tok + r, (first + r).to(tl.int64), mask=r < r_hi)
    else:
        _scatter_ranks(row, stride_mn, tok, N, r_lo, r_hi, CH)
    tl.debug_barrier()
