"""Small ``@triton.jit`` helpers shared by every MonarchAttention program: where a sequence's
tokens sit, which tile a program owns, which lanes of a tile are real. Notation of
docs/algorithm.md: blocks of ``b`` slots, ``m`` blocks, slot ``p = k*b + j`` (block k, offset j).

Tuples passed between helpers (built once in each kernel):
    seq  = (len_ptr, off_ptr, tok_ptr): per sequence its length, pre-padding offset (in the low
           32 bits; the high ones: where its real tokens start, if contiguous) and token index
           (``kernels/layout.py``, ``layout_kernel.py``), read only when the batch has a key-padding mask;
    dims = (H, N, b, m, seq_len, pad_off): heads, input length, block size, blocks of the batch's
           grid, and the length / offset every sequence has when there is no mask.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # the programs work in base 2: exp(x) = exp2(x * LOG2E)
LN2 = tl.constexpr(0.6931471805599453)
NEG = tl.constexpr(-1.0e30)  # finite "minus infinity": masked logits never make NaN (no inf - inf, no 0 * inf)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _cdiv(a, b):
    return (a + b - 1) // b


@triton.jit
def _seq_info(seq, dims, bi, HAS_MASK: tl.constexpr):
    """(length, pre-padding offset) of sequence ``bi``."""
    if HAS_MASK:
        L = tl.load(seq[0] + bi).to(tl.int32)
        off = tl.load(seq[1] + bi).to(tl.int32)  # the low 32 bits: the high ones hold a start (``_token``)
    else:
        L = dims[4]
        off = dims[5]
    return L, off


@triton.jit
def _head_sequence(bh, seq, dims, HAS_MASK: tl.constexpr):
    """(sequence, head, length, pre-padding offset, blocks m_s) of head ``bh``."""
    bi = bh // dims[0]
    L, off = _seq_info(seq, dims, bi, HAS_MASK)
    return bi, bh % dims[0], L, off, (L + dims[2] - 1) // dims[2]


@triton.jit
def _seq_blocks(seq, dims, bh, HAS_MASK: tl.constexpr):
    """Blocks ``m_s`` of the sequence of head ``bh``."""
    L, _ = _seq_info(seq, dims, bh // dims[0], HAS_MASK)
    return _cdiv(L, dims[2])


@triton.jit
def _token(slot, inside, off, L, seq, bi, N, HAS_MASK: tl.constexpr):
    """Input position of the token in ``slot`` and whether there is one. With a mask: ``start +
    rank`` where the sequence's real tokens are contiguous (``start + 1`` in the offset's high bits,
    ``layout_kernel.py``), else the layout's token index."""
    rank = slot - off
    ok = inside & (rank >= 0) & (rank < L)
    if HAS_MASK:
        start = (tl.load(seq[1] + bi) >> 32).to(tl.int32) - 1
        scattered = tl.load(seq[2] + bi.to(tl.int64) * N + rank, mask=ok & (rank * 0 + start < 0), other=0)
        tok = tl.where(start >= 0, start + rank, scattered).to(tl.int64)
    else:
        tok = rank.to(tl.int64)
    return tok, ok


@triton.jit
def _block_ok(j_c, k_c, inside, mb, off, L):
    """Columns (offset j, block k) of an L-step that may carry weight: blocks below the sequence's
    m_b; when it has a single block, only its real slots (the R-step skips the others)."""
    rank = j_c - off
    multi = (k_c * 0 + mb) > 1
    return inside & (k_c < mb) & (multi | ((rank >= 0) & (rank < L)))


@triton.jit
def _tile_origin(t, size, TILE: tl.constexpr, GROUPED: tl.constexpr):
    """Where program ``t``'s tile starts on a grid of groups of ``size`` rows each (blocks of b
    slots, or offsets of m blocks). GROUPED packs ``TILE // size`` whole groups into one tile;
    otherwise one group spans ``ceil(size / TILE)`` tiles. Returns (first group, first row inside
    it, rows per group in the tile, groups in the tile)."""
    if GROUPED:
        return t * (TILE // size), 0, size, TILE // size
    else:
        tiles = (size + TILE - 1) // TILE
        return t // tiles, (t % tiles) * TILE, TILE, 1


@triton.jit
def _l_rows(t, mb, TILE: tl.constexpr, GROUPED: tl.constexpr):
    """Tile origin of an L-step program on the sequence's own grid of b offsets of ``m_s`` blocks:
    grouped tiles pack ``TILE // m_s`` offsets each, so a shorter sequence needs fewer tiles."""
    return _tile_origin(t, tl.maximum(mb, 1), TILE, GROUPED)


@triton.jit
def _lanes(c, c0, first, size, G, outer_lim, inner_lim, GROUPED: tl.constexpr):
    """Lane ``c`` of a tile's loop chunk starting at ``c0``: (outer index, inner index, in range).
    Grouped: ``G`` whole groups of ``size`` from group ``first``; looped: one group ``first``,
    inner indices ``c0 + c``."""
    if GROUPED:
        outer = first + c // size
        inner = c % size
        ok = (c < G * size) & (outer < outer_lim)
    else:
        outer = first + c * 0
        inner = c0 + c
        ok = inner < inner_lim
    return outer, inner, ok


@triton.jit
def _r_count(mb, b, TILE: tl.constexpr, GROUPED: tl.constexpr):
    """R-step tiles of a sequence of ``mb`` blocks (``_tile_origin`` over blocks of b slots)."""
    if GROUPED:
        return _cdiv(mb, TILE // b)
    else:
        return mb * _cdiv(b, TILE)


@triton.jit
def _l_count(mb, b, TILE: tl.constexpr, GROUPED: tl.constexpr):
    """L-step tiles of a sequence of ``mb`` blocks (``_l_rows``); none for an empty sequence."""
    size = tl.maximum(mb, 1)
    if GROUPED:
        n = _cdiv(b, TILE // size)
    else:
        n = b * _cdiv(size, TILE)
    return tl.where(mb > 0, n, 0)


@triton.jit
def _after_previous_grid(PDL: tl.constexpr):
    """Programmatic dependent launch (Hopper and later): a grid launched with ``launch_pdl`` may start
    while the previous grid of the same call runs its last wave. Wait for that grid to finish (its
    writes become visible) before any memory access, then let the next grid start early in turn."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _head_base(ptr, strides, bi, hi):
    """Pointer to head ``hi`` of sequence ``bi`` of a (batch, head, token, dim) tensor."""
    return ptr + bi.to(tl.int64) * strides[0] + hi.to(tl.int64) * strides[1]
