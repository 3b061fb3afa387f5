"""The key-padding layout on the GPU: the same placement as ``kernels/layout.py: sequence_layout``
(whose sort-based version takes many launches), in one of two places (``plan.LaunchPlan.layout_in_grid``):

* ``_layout_kernel``: a launch of its own, one program per sequence;
* ``_sequence_layout``: inside the first grid of the call, where each program lays out its own
  sequence. That saves a launch (host time of small calls) but costs every program of the grid a
  pass over its mask row, so it is chosen only for grids of about one wave.

Both read the mask row once for the length and the first and last real positions, and write the
length and the pre-padding offset. Where the real tokens are contiguous (right or left padding, the
common case) the offset's high 32 bits hold ``first + 1`` and no token index is written: the
kernels compute rank r's position as ``first + r`` (``common._token``) instead of loading it, which
takes one dependent load off every masked program before its first q, k, v load. Otherwise the
high bits are 0 and the token index of the ranks comes from a prefix sum over the row. (The
kernels read the offset as ``int32``: the truncation drops the high bits.) The in-grid version
writes only the ranks its own slots hold and reads them back after a barrier (a CTA sees its own
global writes), so the tile code is the same in every grid.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _scatter_ranks(row, stride_mn, tok, N, r_lo, r_hi, CH: tl.constexpr):
    """Write the position of the real tokens of ranks [r_lo, r_hi) of one mask row to ``tok``, by a
    prefix sum over the row in chunks of CH."""
    x = tl.arange(0, CH)
    total = tl.sum(x * 0, 0)
    for n0 in range(0, N, CH):
        n = n0 + x
        real = tl.load(row + n * stride_mn, mask=n < N, other=0).to(tl.int32)
        rank = tl.cumsum(real, 0) - 1 + total
        tl.store(tok + rank, n.to(tl.int64), mask=(real != 0) & (n < N) & (rank >= r_lo) & (rank < r_hi))
        total += tl.sum(real, 0)


@triton.jit
def _store_length(seq, bi64, L, b, start, PRE: tl.constexpr):
    """Store sequence ``bi64``'s length, and its pre-padding offset with ``start + 1`` in the high
    32 bits (``start``: the first real position where the real tokens are contiguous, else -1);
    returns the offset."""
    if PRE:
        off = ((L + b - 1) // b) * b - L
    else:
        off = L * 0
    tl.store(seq[0] + bi64, L.to(tl.int64))
    tl.store(seq[1] + bi64, off.to(tl.int64) + ((start + 1).to(tl.int64) << 32))
    return off


@triton.jit
def _layout_kernel(mask_ptr, tok_ptr, len_ptr, off_ptr, stride_mb, stride_mn, N, b, PRE: tl.constexpr,
                   CH: tl.constexpr):
    """One program per sequence: ``_sequence_layout`` for all its ranks, in chunks of CH positions.
    (Pointers first: what ``replay.py`` replays.)"""
    _sequence_layout(mask_ptr, stride_mb, stride_mn, (len_ptr, off_ptr, tok_ptr), tl.program_id(0), N, b, 0, N + b,
                     PRE, CH)


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
    """Length and pre-padding offset of sequence ``bi`` (written to ``seq[0]``, ``seq[1]``, the
    offset with the contiguous tokens' start, see the module's docstring) and, where its real tokens
    are scattered, its token index (``seq[2]``, row ``bi``) for the ranks that slots
    ``[slot_lo, slot_hi)`` hold."""
    bi64 = bi.to(tl.int64)
    row = mask_ptr + bi64 * stride_mb
    L, first, last = _mask_extent(row, stride_mn, N, CH)
    scattered = (last - first + 1 != L) & (L > 0)  # an empty row counts as contiguous from 0
    off = _store_length(seq, bi64, L, b, tl.where(scattered, -1, tl.where(L > 0, first, 0)), PRE)
    if scattered:
        r_lo = tl.maximum(slot_lo - off, 0)
        r_hi = tl.minimum(slot_hi - off, L)
        _scatter_ranks(row, stride_mn, seq[2] + bi64 * N, N, r_lo, r_hi, CH)
    tl.debug_barrier()
