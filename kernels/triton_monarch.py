"""Triton forward kernels of MonarchAttention, and their launcher.

Same semantics as ``reference.monarch_attention_torch`` (the spec); notation of
``shared/monarch-attention.md``. Each sequence is laid out by its own length (``layout.py``):
slot ``p = k*b + j`` of sequence ``s`` holds its real token of rank ``p - off[s]`` if that rank is in
``[0, L[s])``; a sequence uses ``m_s = ceil(L[s] / b)`` blocks, and programs for blocks or query
tiles past ``m_s`` exit at once (a sequence's cost follows its own length).

Per step, two launches:

* R-step (``_r_step_kernel``), one program per (batch*head, tile of blocks): the rows of block k are
  queries (step 1: the token's own q; later steps: the block summary ``aR/cR`` written by the previous
  L-step), the columns the keys of block k. A flash-style pass over the key tiles computes, per row,
  ``aL = s * R @ k``, ``Y = R @ v`` and ``cL = sum R log R`` (online: ``sum p (x - max)`` rescaled
  with the max, so ``0 log 0 = 0`` comes for free), and writes them "by offset": ``(BH, b, m, .)``.
* L-step: one program per (batch*head, tile of offsets). Rows are the queries ``(j, l)`` (slot
  ``l*b + j``), columns the blocks ``k`` of offset ``j``, logits ``q . aL - cL``; blocks past ``m_s``
  get no weight. The final L-step (``_l_out_kernel``) accumulates ``Z = L @ Y`` flash-style and writes
  the output rows (and zeros at the input's padding positions). A non-final L-step
  (``_l_sum_kernel``) instead writes the next R-step's summaries ``aR/cR`` (padding queries weigh
  nothing; ``cR = 0`` gives a zero summary, i.e. a uniform R row); its programs own columns
  (offset j, blocks k) and sum over the queries. Only the final R-step computes ``Y``.

On Hopper, every launch of a call after its first uses programmatic dependent launch: the grid is
scheduled while the previous one drains and waits in the kernel (``_after_previous_grid``).

Alternatively (``_fused_kernel``, chosen for T = 1 on short sequences with many heads), one
program per (batch, head) runs all those tiles and steps in turn, in one launch. With a key-padding
mask, ``_layout_kernel`` first builds each sequence's token index, length and pre-padding offset
(one launch; same placement as ``layout.sequence_layout``).

Small blocks are grouped: when ``b`` (R-step) or ``m`` (L-step) is below the tile size, one program
handles ``G = tile // b`` blocks (offsets) at once with a block-diagonal mask, so tiles stay large
enough for the tensor cores. In the L-step the grouping follows each sequence's own ``m_s``
(``G = tile // m_s``), so a half-length sequence needs half the programs. Larger extents get
programs of ``max_rows`` rows that loop over column tiles with an online softmax.

All logits and softmax statistics are float32; the intermediates ``aL``, ``Y`` and summaries are
stored in the input dtype (``cL`` in float32). Inputs may be arbitrarily strided (no copies).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .layout import output_like


LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
NEG = tl.constexpr(-1.0e30)  # finite "minus infinity": masked logits never make NaN (no inf - inf, no 0 * inf)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _seq_info(len_ptr, off_ptr, bi, seq_len, pad_off, HAS_MASK: tl.constexpr):
    if HAS_MASK:
        L = tl.load(len_ptr + bi).to(tl.int32)
        off = tl.load(off_ptr + bi).to(tl.int32)
    else:
        L = seq_len
        off = pad_off
    return L, off


@triton.jit
def _token(slot, inside, off, L, tok_ptr, bi, N, HAS_MASK: tl.constexpr):
    """Input position of the token in ``slot`` and whether there is one."""
    rank = slot - off
    ok = inside & (rank >= 0) & (rank < L)
    if HAS_MASK:
        tok = tl.load(tok_ptr + bi.to(tl.int64) * N + rank, mask=ok, other=0)
    else:
        tok = rank
    return tok.to(tl.int64), ok


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
def _r_tile(
    bh, t, q_ptr, k_ptr, v_ptr, sum_ptr,
    al_ptr, cl_ptr, y_ptr,
    len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off,
    sqb, sqh, sqn, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    scale,
    D: tl.constexpr, DV: tl.constexpr,
    FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr,
    ONE_COL: tl.constexpr, IEEE: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    BDV: tl.constexpr,
):
    """Tile ``t`` (below ``_r_count``) of head ``bh``. WANT_Y: the final R-step, the only one whose
    ``Y = R @ v`` is read (earlier steps neither load v nor write Y). ONE_COL: the block's keys fit
    one column tile, so the body has no loop. (A loop with dynamic bounds made the compiler keep
    index and pointer tiles live across it: 232 registers per thread at b = 128 against 155;
    docs/benchmarks.md, variant 13.)"""
    bi = bh // H
    hi = bh % H
    L, off = _seq_info(len_ptr, off_ptr, bi, seq_len, pad_off, HAS_MASK)
    mb = (L + b - 1) // b
    k0, q0, RB, G = _tile_origin(t, b, BQ, GROUPED)
    # Valid key slots of block k0 (looped case: one block per program).
    lo = tl.maximum(off - k0 * b, 0)
    hi_ = tl.minimum(off + L - k0 * b, b)
    bh64 = bh.to(tl.int64)
    r = tl.arange(0, BQ)
    blk_r = k0 + r // RB
    i_r = q0 + r % RB
    row_in = (r < G * RB) & (i_r < b) & (blk_r < mb)
    slot_r = blk_r * b + i_r
    dd = tl.arange(0, BD)
    ddv = tl.arange(0, BDV)
    dmask = dd < D
    dvmask = ddv < DV
    if FROM_SUMMARY:
        # Summaries exist for every slot of a multi-block sequence, for the real slots of a
        # single-block one (the others are never read by any query).
        srow = (bh64 * m + blk_r) * b + i_r
        s_ok = _block_ok(i_r, blk_r, row_in, mb, off, L)
        qt = tl.load(sum_ptr + srow[:, None] * D + dd[None, :], mask=s_ok[:, None] & dmask[None, :], other=0.0)
    else:
        tok_r, qv = _token(slot_r, row_in, off, L, tok_ptr, bi, N, HAS_MASK)
        qbase = q_ptr + bi.to(tl.int64) * sqb + hi.to(tl.int64) * sqh
        qt = tl.load(qbase + tok_r[:, None] * sqn + dd[None, :] * sqd, mask=qv[:, None] & dmask[None, :], other=0.0)

    kbase = k_ptr + bi.to(tl.int64) * skb + hi.to(tl.int64) * skh
    vbase = v_ptr + bi.to(tl.int64) * svb + hi.to(tl.int64) * svh
    qk_scale = scale * 1.4426950408889634

    m_i = tl.full([BQ], NEG, tl.float32)
    l_i = tl.zeros([BQ], tl.float32)
    acc_k = tl.zeros([BQ, BD], tl.float32)
    acc_v = tl.zeros([BQ, BDV], tl.float32)
    w_i = tl.zeros([BQ], tl.float32)  # sum_i p_i * (x_i - m_i), base-2 logits
    c = tl.arange(0, BK)
    if GROUPED or ONE_COL:  # constant bounds: one iteration, folded away by the compiler
        c_start = 0
        c_end = BK
    else:
        c_start = (lo // BK) * BK
        c_end = hi_
    for c0 in range(c_start, c_end, BK):
        blk_c, i_c, col_in = _lanes(c, c0, k0, b, G, mb, b, GROUPED)
        tok_c, kv = _token(blk_c * b + i_c, col_in, off, L, tok_ptr, bi, N, HAS_MASK)
        kt = tl.load(kbase + tok_c[:, None] * skn + dd[None, :] * skd, mask=kv[:, None] & dmask[None, :], other=0.0)
        if WANT_Y:  # issued before the scores, so that the load overlaps them
            vt = tl.load(vbase + tok_c[:, None] * svn + ddv[None, :] * svd, mask=kv[:, None] & dvmask[None, :],
                         other=0.0)
        s = _dot(qt, tl.trans(kt), IEEE) * qk_scale
        if GROUPED:  # block-diagonal: keys of the row's own block only
            s = tl.where(kv[None, :] & (blk_c[None, :] == blk_r[:, None]), s, NEG)
        else:
            s = tl.where(kv[None, :], s, NEG)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        sc = s - m_new[:, None]
        p = tl.exp2(sc)
        w_i = alpha * (w_i + (m_i - m_new) * l_i) + tl.sum(p * sc, 1)
        l_i = alpha * l_i + tl.sum(p, 1)
        pd = p.to(kt.dtype)
        acc_k = acc_k * alpha[:, None] + _dot(pd, kt, IEEE)
        if WANT_Y:
            acc_v = acc_v * alpha[:, None] + _dot(pd, vt, IEEE)
        m_i = m_new

    l_safe = tl.where(l_i > 0, l_i, 1.0)
    # cL = sum_i R_i log R_i. (Equal to qt . aL - lse, which would save the p * logit term per
    # score, but keeping qt live to the end costs 30 registers per thread at N = 4096: fewer CTAs.)
    c_l = 0.6931471805599453 * (w_i / l_safe - tl.log2(l_safe))
    a_l = (acc_k * (scale / l_safe)[:, None]).to(al_ptr.dtype.element_ty)
    # Written "by offset": row (i, blk) of (BH, b, m, .).
    orow = (bh64 * b + i_r) * m + blk_r
    tl.store(cl_ptr + orow, c_l, mask=row_in)
    tl.store(al_ptr + orow[:, None] * D + dd[None, :], a_l, mask=row_in[:, None] & dmask[None, :])
    if WANT_Y:
        y = acc_v / l_safe[:, None]
        tl.store(y_ptr + orow[:, None] * DV + ddv[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=row_in[:, None] & dvmask[None, :])


@triton.jit
def _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k_c, col_in, b, m, dd, dmask, D: tl.constexpr,
              GROUPED: tl.constexpr, TRANS: tl.constexpr, IEEE: tl.constexpr):
    """Base-2 logits of queries (j_r) against blocks (j_c, k_c); masked entries are NEG. Shape
    (queries, blocks), or (blocks, queries) with TRANS."""
    crow = (bh64 * b + j_c) * m + k_c
    a_l = tl.load(al_ptr + crow[:, None] * D + dd[None, :], mask=col_in[:, None] & dmask[None, :], other=0.0)
    c_l = tl.load(cl_ptr + crow, mask=col_in, other=0.0)
    if TRANS:
        s = (_dot(a_l, tl.trans(q_t), IEEE) - c_l[:, None]) * 1.4426950408889634
        ok = col_in[:, None]
        if GROUPED:  # block-diagonal: blocks of the query's own offset only
            ok = ok & (j_c[:, None] == j_r[None, :])
    else:
        s = (_dot(q_t, tl.trans(a_l), IEEE) - c_l[None, :]) * 1.4426950408889634
        ok = col_in[None, :]
        if GROUPED:
            ok = ok & (j_c[None, :] == j_r[:, None])
    return tl.where(ok, s, NEG), crow


@triton.jit
def _l_rows(t, mb, TILE: tl.constexpr, GROUPED: tl.constexpr):
    """Tile origin of an L-step program on the sequence's own grid of b offsets of ``m_s`` blocks:
    grouped tiles pack ``TILE // m_s`` offsets each, so a shorter sequence needs fewer tiles."""
    return _tile_origin(t, tl.maximum(mb, 1), TILE, GROUPED)


@triton.jit
def _cdiv(a, b):
    return (a + b - 1) // b


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
def _zero_pad_rows(bh, t, o_ptr, mask_ptr, H, N, b, m, sob, soh, son, sod, smb, smn,
                   DV: tl.constexpr, GROUPED: tl.constexpr, BQ: tl.constexpr, BDV: tl.constexpr):
    """Zero the output rows of padding tokens: input positions n = l*b + j of tile ``t`` on the
    batch's grid of m blocks (the L-step's ``_tile_origin``), where each n < N is in one tile."""
    bi = bh // H
    hi = bh % H
    r = tl.arange(0, BQ)
    ddv = tl.arange(0, BDV)
    jz, lz, RZ, GZ = _tile_origin(t, m, BQ, GROUPED)
    j_z = jz + r // RZ
    l_z = lz + r % RZ
    n = l_z.to(tl.int64) * b + j_z
    inb = (r < GZ * RZ) & (j_z < b) & (l_z < m) & (n < N)
    real = tl.load(mask_ptr + bi.to(tl.int64) * smb + n * smn, mask=inb, other=1)
    pad = inb & (real == 0)
    obase = o_ptr + bi.to(tl.int64) * sob + hi.to(tl.int64) * soh
    tl.store(obase + n[:, None] * son + ddv[None, :] * sod, tl.zeros([BQ, BDV], tl.float32).to(o_ptr.dtype.element_ty),
             mask=pad[:, None] & (ddv < DV)[None, :])


@triton.jit
def _l_out_tile(
    bh, t, q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr,
    len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off,
    sqb, sqh, sqn, sqd,
    sob, soh, son, sod,
    D: tl.constexpr, DV: tl.constexpr,
    HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
):
    """Final L-step, tile ``t`` (below ``_l_count``) of head ``bh``: output rows. ONE_COL: the
    sequence's blocks fit one column tile (no loop in the body; see ``_r_tile``)."""
    bi = bh // H
    hi = bh % H
    L, off = _seq_info(len_ptr, off_ptr, bi, seq_len, pad_off, HAS_MASK)
    mb = (L + b - 1) // b
    r = tl.arange(0, BQ)
    ddv = tl.arange(0, BDV)
    dvmask = ddv < DV
    obase = o_ptr + bi.to(tl.int64) * sob + hi.to(tl.int64) * soh
    j0, l0, RM, G = _l_rows(t, mb, BQ, GROUPED)
    bh64 = bh.to(tl.int64)
    j_r = j0 + r // RM
    l_r = l0 + r % RM
    row_in = (r < G * RM) & (j_r < b) & (l_r < mb)
    dd = tl.arange(0, BD)
    dmask = dd < D
    tok_r, qv = _token(l_r * b + j_r, row_in, off, L, tok_ptr, bi, N, HAS_MASK)
    qbase = q_ptr + bi.to(tl.int64) * sqb + hi.to(tl.int64) * sqh
    q_t = tl.load(qbase + tok_r[:, None] * sqn + dd[None, :] * sqd, mask=qv[:, None] & dmask[None, :], other=0.0)

    m_i = tl.full([BQ], NEG, tl.float32)
    l_i = tl.zeros([BQ], tl.float32)
    acc = tl.zeros([BQ, BDV], tl.float32)
    c = tl.arange(0, BK)
    if GROUPED or ONE_COL:  # constant bounds: one iteration, folded away by the compiler
        c_end = BK
    else:
        c_end = mb
    for c0 in range(0, c_end, BK):
        j_c, k_c, col_in = _lanes(c, c0, j0, RM, G, b, m, GROUPED)
        col_in = _block_ok(j_c, k_c, col_in, mb, off, L)
        s, crow = _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k_c, col_in, b, m, dd, dmask, D, GROUPED, False, IEEE)
        yt = tl.load(y_ptr + crow[:, None] * DV + ddv[None, :], mask=col_in[:, None] & dvmask[None, :], other=0.0)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = alpha * l_i + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(yt.dtype), yt, IEEE)
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    z = acc / l_safe[:, None]
    tl.store(obase + tok_r[:, None] * son + ddv[None, :] * sod, z.to(o_ptr.dtype.element_ty),
             mask=qv[:, None] & dvmask[None, :])


@triton.jit
def _l_sum_tile(
    bh, t, q_ptr, al_ptr, cl_ptr, sum_ptr,
    len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off,
    sqb, sqh, sqn, sqd,
    D: tl.constexpr,
    HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
):
    """Non-final L-step, tile ``t`` (below ``_l_count``) of head ``bh``: summaries aR/cR of a tile of
    columns (block k, offset j) for the next R-step, summed over the queries (rows) in chunks of BQ.
    A query's weights need its softmax statistics over all the blocks of its offset: when they fit
    the tile's columns (GROUPED, ONE_COL) they come from the same scores; otherwise each row chunk
    recomputes them over the other column tiles."""
    bi = bh // H
    hi = bh % H
    L, off = _seq_info(len_ptr, off_ptr, bi, seq_len, pad_off, HAS_MASK)
    mb = (L + b - 1) // b
    j0, k0, RM, G = _l_rows(t, mb, BK, GROUPED)
    bh64 = bh.to(tl.int64)
    dd = tl.arange(0, BD)
    dmask = dd < D
    c = tl.arange(0, BK)
    j_c = j0 + c // RM
    k_c = k0 + c % RM
    col_in = _block_ok(j_c, k_c, (c < G * RM) & (j_c < b), mb, off, L)
    qbase = q_ptr + bi.to(tl.int64) * sqb + hi.to(tl.int64) * sqh
    r = tl.arange(0, BQ)
    a_r = tl.zeros([BK, BD], tl.float32)
    c_r = tl.zeros([BK], tl.float32)
    if GROUPED:
        l_end = BQ
    else:
        l_end = mb
    for l0 in range(0, l_end, BQ):
        j_r, l_r, row_in = _lanes(r, l0, j0, RM, G, b, mb, GROUPED)
        tok_r, qv = _token(l_r * b + j_r, row_in, off, L, tok_ptr, bi, N, HAS_MASK)
        q_t = tl.load(qbase + tok_r[:, None] * sqn + dd[None, :] * sqd, mask=qv[:, None] & dmask[None, :], other=0.0)
        # Transposed (blocks, queries): the weights are then the first operand of the dot that sums
        # over the queries, with no transpose in registers (8 warps: 174 registers per thread
        # against 243 for (queries, blocks), sm_90, BQ = 64, BK = 128).
        s, _ = _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k_c, col_in, b, m, dd, dmask, D, GROUPED, True, IEEE)
        if GROUPED or ONE_COL:
            m_i = tl.max(s, 0)
            p = tl.exp2(s - m_i[None, :])
            l_i = tl.sum(p, 0)
        else:
            # Each query's statistics over all the blocks of its offset, then this tile's weights.
            m_i = tl.full([BQ], NEG, tl.float32)
            l_i = tl.zeros([BQ], tl.float32)
            for c1 in range(0, mb, BK):
                k2 = c1 + c
                s2, _ = _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k2, _block_ok(j_c, k2, k2 < m, mb, off, L),
                                  b, m, dd, dmask, D, GROUPED, True, IEEE)
                m_new = tl.maximum(m_i, tl.max(s2, 0))
                l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s2 - m_new[None, :]), 0)
                m_i = m_new
            p = tl.exp2(s - m_i[None, :])
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        # Padding queries put no weight anywhere.
        p = tl.where(qv[None, :], p / l_safe[None, :], 0.0)
        a_r += _dot(p.to(q_t.dtype), q_t, IEEE)
        c_r += tl.sum(p, 1)
    summ = a_r / tl.where(c_r > 0, c_r, 1.0)[:, None]
    srow = (bh64 * m + k_c) * b + j_c
    tl.store(sum_ptr + srow[:, None] * D + dd[None, :], summ.to(sum_ptr.dtype.element_ty),
             mask=col_in[:, None] & dmask[None, :])


# ---------------------------------------------------------------------------------------------
# Kernels: one program per tile (two launches per step), or one program per (batch, head) that
# runs every tile of its head in turn ("fused": the intermediates it writes are read back by the
# same program right away, from L2, and one launch does all steps).


@triton.jit
def _after_previous_grid(PDL: tl.constexpr):
    """Programmatic dependent launch (Hopper and later): a grid launched with ``launch_pdl`` may start
    while the previous grid of the same call runs its last wave. Wait for that grid to finish (its
    writes become visible) before any memory access, then let the next grid start early in turn."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _seq_blocks(len_ptr, off_ptr, bh, H, b, seq_len, pad_off, HAS_MASK: tl.constexpr):
    L, _ = _seq_info(len_ptr, off_ptr, bh // H, seq_len, pad_off, HAS_MASK)
    return _cdiv(L, b)


@triton.jit
def _r_step_kernel(
    q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, TILES,
    sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd, scale,
    D: tl.constexpr, DV: tl.constexpr,
    FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr,
    ONE_COL: tl.constexpr, IEEE: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    BDV: tl.constexpr, PDL: tl.constexpr,
):
    """One program per tile of the batch's grid (TILES per head); tiles past the sequence's own
    count exit at once. (Programs that loop over several tiles, software-pipelined, were slower:
    inside a loop the compiler hoists every loop-invariant index and pointer tile out of the body,
    which cost 40-100 registers per thread; docs/benchmarks.md, variant 12.)"""
    _after_previous_grid(PDL)
    pid = tl.program_id(0)
    bh = pid // TILES
    t = pid % TILES
    if t < _r_count(_seq_blocks(len_ptr, off_ptr, bh, H, b, seq_len, pad_off, HAS_MASK), b, BQ, GROUPED):
        _r_tile(bh, t, q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, len_ptr, off_ptr,
                tok_ptr, H, N, b, m, seq_len, pad_off, sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
                scale, D, DV, FROM_SUMMARY, WANT_Y, HAS_MASK, GROUPED, ONE_COL, IEEE, BQ, BK, BD, BDV)


@triton.jit
def _l_out_kernel(
    q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, mask_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, TILES,
    sqb, sqh, sqn, sqd, sob, soh, son, sod, smb, smn,
    D: tl.constexpr, DV: tl.constexpr,
    HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PDL: tl.constexpr,
):
    """As ``_r_step_kernel``; with a mask, each program also zeroes the output rows of the padding
    tokens in its tile of the batch's grid."""
    _after_previous_grid(PDL)
    pid = tl.program_id(0)
    bh = pid // TILES
    t = pid % TILES
    if HAS_MASK:
        _zero_pad_rows(bh, t, o_ptr, mask_ptr, H, N, b, m, sob, soh, son, sod, smb, smn, DV, GROUPED, BQ, BDV)
    if t < _l_count(_seq_blocks(len_ptr, off_ptr, bh, H, b, seq_len, pad_off, HAS_MASK), b, BQ, GROUPED):
        _l_out_tile(bh, t, q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, len_ptr, off_ptr, tok_ptr,
                    H, N, b, m, seq_len, pad_off, sqb, sqh, sqn, sqd, sob, soh, son, sod,
                    D, DV, HAS_MASK, GROUPED, ONE_COL, IEEE, BQ, BK, BD, BDV)


@triton.jit
def _l_sum_kernel(
    q_ptr, al_ptr, cl_ptr, sum_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, TILES,
    sqb, sqh, sqn, sqd,
    D: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, PDL: tl.constexpr,
):
    """As ``_r_step_kernel``."""
    _after_previous_grid(PDL)
    pid = tl.program_id(0)
    bh = pid // TILES
    t = pid % TILES
    if t < _l_count(_seq_blocks(len_ptr, off_ptr, bh, H, b, seq_len, pad_off, HAS_MASK), b, BK, GROUPED):
        _l_sum_tile(bh, t, q_ptr, al_ptr, cl_ptr, sum_ptr, len_ptr, off_ptr, tok_ptr,
                    H, N, b, m, seq_len, pad_off, sqb, sqh, sqn, sqd, D, HAS_MASK, GROUPED, ONE_COL, IEEE, BQ, BK,
                    BD)


@triton.jit
def _fused_kernel(
    q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, mask_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, L_TILES,
    sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, son, sod, smb, smn, scale,
    D: tl.constexpr, DV: tl.constexpr, NUM_STEPS: tl.constexpr,
    HAS_MASK: tl.constexpr, R_GROUPED: tl.constexpr, R_ONE_COL: tl.constexpr, L_GROUPED: tl.constexpr,
    L_ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    R_TILE: tl.constexpr, R_COLS: tl.constexpr, L_TILE: tl.constexpr, L_COLS: tl.constexpr,
    S_COLS: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PDL: tl.constexpr,
):
    _after_previous_grid(PDL)
    bh = tl.program_id(0)
    mb = _seq_blocks(len_ptr, off_ptr, bh, H, b, seq_len, pad_off, HAS_MASK)
    for step in tl.static_range(NUM_STEPS):
        for t in range(_r_count(mb, b, R_TILE, R_GROUPED)):
            _r_tile(bh, t, q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, len_ptr, off_ptr,
                    tok_ptr, H, N, b, m, seq_len, pad_off, sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh,
                    svn, svd, scale, D, DV, step > 0, step == NUM_STEPS - 1, HAS_MASK, R_GROUPED, R_ONE_COL, IEEE,
                    R_TILE, R_COLS, BD, BDV)
        # The whole CTA's global writes are visible to it after a barrier.
        tl.debug_barrier()
        if step < NUM_STEPS - 1:
            for t in range(_l_count(mb, b, S_COLS, L_GROUPED)):
                _l_sum_tile(bh, t, q_ptr, al_ptr, cl_ptr, sum_ptr, len_ptr, off_ptr, tok_ptr,
                            H, N, b, m, seq_len, pad_off, sqb, sqh, sqn, sqd, D, HAS_MASK, L_GROUPED, L_ONE_COL,
                            IEEE, L_TILE, S_COLS, BD)
            tl.debug_barrier()
    if HAS_MASK:
        for t in range(L_TILES):
            _zero_pad_rows(bh, t, o_ptr, mask_ptr, H, N, b, m, sob, soh, son, sod, smb, smn, DV, L_GROUPED,
                           L_TILE, BDV)
    for t in range(_l_count(mb, b, L_TILE, L_GROUPED)):
        _l_out_tile(bh, t, q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, len_ptr, off_ptr, tok_ptr,
                    H, N, b, m, seq_len, pad_off, sqb, sqh, sqn, sqd, sob, soh, son, sod,
                    D, DV, HAS_MASK, L_GROUPED, L_ONE_COL, IEEE, L_TILE, L_COLS, BD, BDV)


@triton.jit
def _layout_kernel(mask_ptr, smb, smn, tok_ptr, len_ptr, off_ptr, N, b, PRE: tl.constexpr, CH: tl.constexpr):
    """Per sequence: token_index (real positions in order), length, and the pre-padding offset.
    One program per sequence, in one launch (the sort-based ``layout.sequence_layout`` takes many)."""
    bi = tl.program_id(0).to(tl.int64)
    x = tl.arange(0, CH)
    total = tl.sum(x * 0, 0)
    for n0 in range(0, N, CH):
        n = n0 + x
        real = tl.load(mask_ptr + bi * smb + n * smn, mask=n < N, other=0).to(tl.int32)
        rank = tl.cumsum(real, 0) - 1 + total
        tl.store(tok_ptr + bi * N + rank, n.to(tl.int64), mask=(real != 0) & (n < N))
        total += tl.sum(real, 0)
    tl.store(len_ptr + bi, total.to(tl.int64))
    if PRE:
        tl.store(off_ptr + bi, (((total + b - 1) // b) * b - total).to(tl.int64))
    else:
        tl.store(off_ptr + bi, (total * 0).to(tl.int64))


def _pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _tiling(x: int, width: int, max_tile: int | None, group_rows: int | None = None, max_rows: int = 64):
    """Tiles for rows of extent x (b for the R-step, m for the L-step): (grouped, rows, columns).

    Small extents are grouped: whole blocks (offsets) packed into one square tile of up to
    ``group_rows`` rows (default 32 for head dims up to 64, else 64). Larger ones get ``max_rows``
    rows per program and loop over column tiles (128 x 128 tiles at b = 128 used 255 registers per
    thread and spilled: ncu, H100, 4 warps).

    32-row tiles with 2 warps (``_warps``) against 64-row ones with 4, H100, head dim 64: 0.468 vs
    0.644 ms at N = 197 (batch 512), 0.686 vs 0.916 at N = 512 (batch 256), 1.117 vs 1.221 at N = 256
    (batch 1024), 2.09 vs 2.45 at N = 256, T = 2 (docs/benchmarks.md, variant 21)."""
    cap = max_tile if max_tile is not None else (128 if width <= 128 else 64)
    if group_rows is None:
        group_rows = 32 if width <= 64 else 64
    p = max(16, _pow2(x))
    if p <= min(cap, max_rows):
        tile = max(p, min(group_rows, cap))
        return True, tile, tile
    return False, min(max_rows, cap), min(p, cap)


def _warps(tile: int, width: int) -> int:
    if tile * width <= 32 * 64:
        return 2  # small tiles: more programs per SM
    return 8 if tile * width >= 128 * 128 else 4


@dataclass(frozen=True)
class _Plan:
    """Tiles of one call: per step kind, grouped or not, rows and columns per program, programs per
    head, one column tile or a loop, warps. r_: R-step; l_: L-steps; s_: the non-final L-step."""

    r_grouped: bool
    r_tile: int
    r_cols: int
    r_tiles: int
    r_one: bool
    r_warps: int
    l_grouped: bool
    l_tile: int
    l_cols: int
    l_tiles: int
    l_one: bool
    l_warps: int
    s_rows: int
    s_cols: int
    s_tiles: int
    s_warps: int


def _plan(b: int, m: int, width: int, cfg: dict, max_tile: int | None = None) -> _Plan:
    """The launcher's tiles for blocks of b, m blocks and head width ``width`` (padded head dim).
    ``cfg``: benchmark/tuning knobs (group_rows, max_rows, max_tile, r_warps, l_warps, s_rows,
    s_warps; the launcher also reads mode, warps, stages, pdl)."""
    max_tile = cfg.get("max_tile", max_tile)
    group = cfg.get("group_rows")
    # 64-row programs: 128-row ones were 33-37% slower at T = 1, N = 8192 / 16384, and 5% slower at
    # T = 2, N = 16384 (H100, docs/benchmarks.md).
    rows = cfg.get("max_rows", 64)
    r_grouped, r_tile, r_cols = _tiling(b, width, max_tile, group, rows)
    l_grouped, l_tile, l_cols = _tiling(m, width, max_tile, group, rows)
    l_one = l_grouped or l_cols >= m
    l_tiles = -(-b // (l_tile // m)) if l_grouped else b * -(-m // l_tile)
    l_warps = cfg.get("l_warps", _warps(l_tile, width))
    # Non-final L-steps: a program sums over all the queries of its columns, so where a sequence's
    # blocks fit one column tile, its columns are all of them (one pass, no recomputed statistics).
    s_cols = l_cols if l_one else l_tile
    return _Plan(
        r_grouped=r_grouped, r_tile=r_tile, r_cols=r_cols,
        r_tiles=-(-m // (r_tile // b)) if r_grouped else m * -(-b // r_tile),
        r_one=r_grouped or r_cols >= b, r_warps=cfg.get("r_warps", _warps(r_tile, width)),
        l_grouped=l_grouped, l_tile=l_tile, l_cols=l_cols, l_tiles=l_tiles, l_one=l_one, l_warps=l_warps,
        s_rows=l_tile if l_grouped else cfg.get("s_rows", l_tile), s_cols=s_cols,
        s_tiles=l_tiles if l_grouped else b * -(-m // s_cols), s_warps=cfg.get("s_warps", l_warps),
    )


# triton.jit built interpreted kernels at this module's import iff TRITON_INTERPRET was set then.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
_DEVICES: dict = {}


def _device(q: torch.Tensor) -> tuple[int, int]:
    """(SM count, compute capability major) of q's GPU, read once per device."""
    dev = q.device.index if q.device.index is not None else torch.cuda.current_device()
    if dev not in _DEVICES:
        props = torch.cuda.get_device_properties(dev)
        _DEVICES[dev] = (props.multi_processor_count, props.major)
    return _DEVICES[dev]


def _sm_count(q: torch.Tensor) -> int:
    return _device(q)[0]


def _pdl(q: torch.Tensor) -> bool:
    """Launch the grids after a call's first with programmatic dependent launch (sm_90 and later)."""
    return q.is_cuda and not _INTERPRETED and _device(q)[1] >= 9


def _use_fused(bh: int, n_pad: int, q: torch.Tensor, num_steps: int) -> bool:
    """One program per head, all steps in one launch, or two launches of tile programs per step?
    Measured on an H100 with 32-row tiles and 2 warps (docs/benchmarks.md, variant 21): one program
    per head is faster at T = 1 on N' <= 512 with many heads (1.117 vs 1.219 ms at N = 256, batch
    1024; 0.686 vs 0.767 ms at N = 512, batch 256), slower beyond (0.377 vs 0.326 ms at N = 1024,
    batch 64) and at T = 2 (2.131 vs 2.093 ms at N = 256, batch 1024)."""
    if not q.is_cuda or num_steps > 1 or n_pad > 512:
        return False
    return bh >= 4 * _sm_count(q)


def monarch_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    block_size: int,
    num_steps: int,
    pad_type: str,
    scale: float,
    out: torch.Tensor | None = None,
    _max_tile: int | None = None,
    _poison: bool = False,
    _cfg: dict | None = None,
) -> torch.Tensor:
    """Launch the kernels. Inputs as validated by ``ops.monarch_attention``; no host sync."""
    B, H, N, D = q.shape
    DV = v.shape[-1]
    b = int(block_size)
    m = max(1, -(-N // b))
    BH = B * H
    dev = q.device
    if out is None:
        out = output_like(q, DV)
    if BH == 0 or N == 0:
        return out
    has_mask = key_padding_mask is not None
    if has_mask:
        mask_u8 = key_padding_mask.to(device=dev).view(torch.uint8)
        smb, smn = mask_u8.stride()
        tok = torch.empty((B, N), dtype=torch.int64, device=dev)
        lens, offs = torch.empty((2, B), dtype=torch.int64, device=dev).unbind(0)
        # Chunks of up to 4096 positions: each chunk is a serial step of the sequence's one program.
        _layout_kernel[(B,)](mask_u8, smb, smn, tok, lens, offs, N, b, PRE=pad_type == "pre",
                             CH=min(4096, max(16, _pow2(N))), num_warps=4 if N <= 1024 else 8)
        seq_len, pad_off = N, 0
    else:
        lens = offs = tok = mask_u8 = q  # unused pointers
        smb = smn = 0
        seq_len = N
        pad_off = m * b - N if pad_type == "pre" else 0
    ieee = q.dtype == torch.float32
    BD, BDV = max(16, _pow2(D)), max(16, _pow2(DV))
    width = max(BD, BDV)

    cfg = _cfg or {}
    pl = _plan(b, m, width, cfg, _max_tile)
    r_grouped, r_tile, r_cols, r_tiles, r_one = pl.r_grouped, pl.r_tile, pl.r_cols, pl.r_tiles, pl.r_one
    l_grouped, l_tile, l_cols, l_tiles, l_one = pl.l_grouped, pl.l_tile, pl.l_cols, pl.l_tiles, pl.l_one
    stages = {"num_stages": cfg["stages"]} if "stages" in cfg else {}
    # Every grid but the call's first starts early (programmatic dependent launch) and waits in the
    # kernel for the previous one. The first may follow the caller's kernels, whose writes it reads.
    pdl = cfg.get("pdl", _pdl(q))

    def chained(after_ours: bool) -> dict:
        """Launch arguments of a grid; ``after_ours``: a grid of this call runs before it."""
        on = pdl and after_ours
        return {"PDL": on, **({"launch_pdl": True} if on else {})}

    seq_args = (lens, offs, tok)
    dims = (H, N, b, m, seq_len, pad_off)

    # Intermediates: aL (BH, b, m, D), Y (BH, b, m, DV), summaries (BH, m, b, D) in the input
    # dtype, in one allocation; cL (BH, b, m) in float32.
    n_al, n_y = BH * b * m * D, BH * b * m * DV
    n_s = BH * m * b * D if num_steps > 1 else 0
    buf = torch.empty(n_al + n_y + n_s, dtype=q.dtype, device=dev)
    al = buf[:n_al].view(BH, b, m, D)
    y = buf[n_al:n_al + n_y].view(BH, b, m, DV)
    summ = buf[n_al + n_y:].view(BH, m, b, D) if num_steps > 1 else al
    cl = torch.empty((BH, b, m), dtype=torch.float32, device=dev)
    if _poison:  # tests: reading an intermediate nobody wrote shows up as NaN
        buf.fill_(float("nan"))
        cl.fill_(float("nan"))

    if cfg.get("mode", "fused" if _use_fused(BH, m * b, q, num_steps) else "tiles") == "fused":
        # One program per (batch, head): all steps in one launch, intermediates read back from L2.
        _fused_kernel[(BH,)](
            q, k, v, summ, al, cl, y, out, mask_u8, *seq_args, *dims, l_tiles,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), smb, smn, float(scale),
            D=D, DV=DV, NUM_STEPS=num_steps, HAS_MASK=has_mask, R_GROUPED=r_grouped, R_ONE_COL=r_one,
            L_GROUPED=l_grouped, L_ONE_COL=l_one, IEEE=ieee, R_TILE=r_tile, R_COLS=r_cols, L_TILE=l_tile,
            L_COLS=l_cols, S_COLS=pl.s_cols, BD=BD, BDV=BDV, **chained(has_mask),
            num_warps=cfg.get("warps", max(pl.r_warps, pl.l_warps)), **stages,
        )
        return out

    for step in range(num_steps):
        _r_step_kernel[(BH * r_tiles,)](
            q, k, v, summ, al, cl, y, *seq_args, *dims, r_tiles,
            *q.stride(), *k.stride(), *v.stride(), float(scale),
            D=D, DV=DV, FROM_SUMMARY=step > 0, WANT_Y=step == num_steps - 1, HAS_MASK=has_mask, GROUPED=r_grouped,
            ONE_COL=r_one, IEEE=ieee, BQ=r_tile, BK=r_cols, BD=BD, BDV=BDV, **chained(has_mask or step > 0),
            num_warps=pl.r_warps, **stages,
        )
        if step < num_steps - 1:
            _l_sum_kernel[(BH * pl.s_tiles,)](
                q, al, cl, summ, *seq_args, *dims, pl.s_tiles, *q.stride(),
                D=D, HAS_MASK=has_mask, GROUPED=l_grouped, ONE_COL=l_one, IEEE=ieee,
                BQ=pl.s_rows, BK=pl.s_cols, BD=BD, **chained(True), num_warps=pl.s_warps, **stages,
            )
        else:
            _l_out_kernel[(BH * l_tiles,)](
                q, al, cl, y, out, mask_u8, *seq_args, *dims, l_tiles,
                *q.stride(), *out.stride(), smb, smn,
                D=D, DV=DV, HAS_MASK=has_mask, GROUPED=l_grouped, ONE_COL=l_one, IEEE=ieee,
                BQ=l_tile, BK=l_cols, BD=BD, BDV=BDV, **chained(True), num_warps=pl.l_warps, **stages,
            )
    return out
