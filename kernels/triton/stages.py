"""The work of one tile of each step, as ``@triton.jit`` functions that both strategies run: the
tiled kernels (``tiled.py``: one program per tile) and the fused kernel (``fused.py``: one program
per head loops over its tiles). Formulas: docs/algorithm.md, section 2.

* R-step tile (``_r_tile``): rows are the queries of block k (step 1: the token's own q; later
  steps: the block summary ``aR/cR`` written by the previous L-step), columns the keys of block k.
  A flash-style pass over the key tiles computes, per row, ``aL = s * R @ k`` (stored as
  ``min(s, 1) * R @ k``; the L-steps apply the rest, ``max(s, 1)``), ``Y = R @ v`` and
  ``cL = sum R log R`` (online: ``sum p (x - max)`` rescaled with the max, so ``0 log 0 = 0``
  comes for free), written "by offset": ``(BH, b, m, .)``.
* Final L-step tile (``_l_out_tile``): rows are the queries ``(j, l)`` (slot ``l*b + j``), columns
  the blocks ``k`` of offset ``j``, logits ``q . aL - cL``; blocks past ``m_s`` get no weight.
  Accumulates ``Z = L @ Y`` flash-style and writes the output rows.
* Non-final L-step tile (``_l_sum_tile``): writes the next R-step's summaries ``aR/cR`` instead;
  its program owns columns (offset j, blocks k) and sums over the queries (padding queries weigh
  nothing; ``cR = 0`` gives a zero summary, i.e. a uniform R row).

All logits and softmax statistics are float32, in base 2.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    LN2,
    LOG2E,
    NEG,
    _block_ok,
    _dot,
    _head_base,
    _head_sequence,
    _l_rows,
    _lanes,
    _tile_origin,
    _token,
)
from .variants import _exact_logit, _not_global, _own_block, _with_exact_column


@triton.jit
def _r_queries(bh64, bi, hi, q_ptr, sum_ptr, seq, dims, sq, blk_r, i_r, slot_r, row_in, mb, off, L, dd, dmask,
               D: tl.constexpr, FROM_SUMMARY: tl.constexpr, HAS_MASK: tl.constexpr):
    """The R-step's row vectors: the queries of the tile's slots, or (FROM_SUMMARY) the summaries,
    which exist for every slot of a multi-block sequence and for the real slots of a single-block
    one (the others are never read by any query)."""
    b = dims[2]
    if FROM_SUMMARY:
        srow = (bh64 * dims[3] + blk_r) * b + i_r
        s_ok = _block_ok(i_r, blk_r, row_in, mb, off, L)
        qt = tl.load(sum_ptr + srow[:, None] * D + dd[None, :], mask=s_ok[:, None] & dmask[None, :], other=0.0)
    else:
        tok_r, qv = _token(slot_r, row_in, off, L, seq, bi, dims[1], HAS_MASK)
        qbase = _head_base(q_ptr, sq, bi, hi)
        qt = tl.load(qbase + tok_r[:, None] * sq[2] + dd[None, :] * sq[3], mask=qv[:, None] & dmask[None, :],
                     other=0.0)
    return qt


@triton.jit
def _r_tile(
    bh, t, q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, seq, dims, sq, sk, sv, scale,
    D: tl.constexpr, DV: tl.constexpr,
    FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr,
    ONE_COL: tl.constexpr, IEEE: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    BDV: tl.constexpr, var, GLOBAL: tl.constexpr, LSE_OUT: tl.constexpr, home=None, AL_HOME: tl.constexpr = False,
):
    """R-step tile ``t`` (below ``_r_count``) of head ``bh``. WANT_Y: the final R-step, the only one
    whose ``Y = R @ v`` is read (earlier steps neither load v nor write Y). ONE_COL: the block's keys
    fit one column tile, so the body has no loop (a loop with dynamic bounds keeps index and pointer
    tiles live across it: more registers per thread). Longer than a screen: the online softmax keeps
    its five accumulators in this one function, whose generated code is the one measured.
    ``var`` = (ex_l, ex_y, gflag) pointers of the options (``variants.py``): GLOBAL, global keys are
    padding here; LSE_OUT, the first R-step of exact diagonal blocks writes each row's log-sum-exp.
    AL_HOME: aL goes to the output tensor (``_al_rows``; ``home`` = (output, spare rows, their rows per
    head, output strides))."""
    N, b, m = dims[1], dims[2], dims[3]
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    k0, q0, RB, G = _tile_origin(t, b, BQ, GROUPED)
    # Valid key slots of block k0 (looped case: one block per program).
    k_lo = tl.maximum(off - k0 * b, 0)
    k_hi = tl.minimum(off + L - k0 * b, b)
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
    qt = _r_queries(bh64, bi, hi, q_ptr, sum_ptr, seq, dims, sq, blk_r, i_r, slot_r, row_in, mb, off, L, dd, dmask,
                    D, FROM_SUMMARY, HAS_MASK)
    kbase = _head_base(k_ptr, sk, bi, hi)
    vbase = _head_base(v_ptr, sv, bi, hi)
    qk_scale = scale * LOG2E

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
        c_start = (k_lo // BK) * BK
        c_end = k_hi
    for c0 in range(c_start, c_end, BK):
        blk_c, i_c, col_in = _lanes(c, c0, k0, b, G, mb, b, GROUPED)
        tok_c, kv = _token(blk_c * b + i_c, col_in, off, L, seq, bi, N, HAS_MASK)
        if GLOBAL:  # global keys leave their blocks (docs/algorithm.md, section 7)
            kv = _not_global(var[2], bh64, N, blk_c * b + i_c - off, kv)
        kt = tl.load(kbase + tok_c[:, None] * sk[2] + dd[None, :] * sk[3], mask=kv[:, None] & dmask[None, :],
                     other=0.0)
        if WANT_Y:  # issued before the scores, so that the load overlaps them
            vt = tl.load(vbase + tok_c[:, None] * sv[2] + ddv[None, :] * sv[3], mask=kv[:, None] & dvmask[None, :],
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
    if AL_HOME:
        al_to = _al_rows(home, bh64, bi, hi, blk_r, i_r, row_in, off, L, seq, dims, dd, D, HAS_MASK)
    else:  # the rows "by offset", addressed in ``_r_store`` (a pointer tile made here stays live: more registers)
        al_to = al_ptr
    _r_store(bh64, al_to, cl_ptr, y_ptr, b, m, i_r, blk_r, row_in, l_i, w_i, acc_k, acc_v, scale, dd, dmask, ddv,
             dvmask, D, DV, WANT_Y, m_i, var, GLOBAL, LSE_OUT, AL_HOME)


@triton.jit
def _al_rows(home, bh64, bi, hi, blk, i, inside, off, L, seq, dims, dd, D: tl.constexpr, HAS_MASK: tl.constexpr):
    """(rows, BD) pointers to aL of slots (blk, i) where it lies in the output tensor ``home[0]``
    (``LaunchPlan.al_home``): at the input position of the slot's token, the row that the final
    L-step of offset i overwrites with that token's output once it has read every aL of the offset
    (``_l_out_home_tile``). A slot with no token (padding inside the sequence's blocks: fewer than b,
    all before ``off`` or from ``off + L`` on) has a spare row in ``home[1]``, ``home[2]`` rows per
    head. (In the scratch, aL is "by offset": ``_r_store`` and ``_l_scores`` address it.)"""
    slot = blk * dims[2] + i
    tok, real = _token(slot, inside, off, L, seq, bi, dims[1], HAS_MASK)
    rank = slot - off
    spare = tl.where(rank < 0, slot, rank - L).to(tl.int64)
    so = home[3]
    # Chosen per row, then spread over the row's features: one (rows, BD) pointer tile, not two.
    row = tl.where(real, _head_base(home[0], so, bi, hi) + tok * so[2], home[1] + (bh64 * home[2] + spare) * D)
    return row[:, None] + dd[None, :] * tl.where(real, so[3], 1)[:, None]


@triton.jit
def _r_store(bh64, al_to, cl_ptr, y_ptr, b, m, i_r, blk_r, row_in, l_i, w_i, acc_k, acc_v, scale, dd, dmask, ddv,
             dvmask, D: tl.constexpr, DV: tl.constexpr, WANT_Y: tl.constexpr, m_i, var, GLOBAL: tl.constexpr,
             LSE_OUT: tl.constexpr, AL_HOME: tl.constexpr = False):
    """Normalise an R-step tile's accumulators and write them "by offset": row (i, blk) of
    (BH, b, m, .); with AL_HOME, aL where the pointer tile ``al_to`` points (``_al_rows``)."""
    if GLOBAL:  # a row whose keys are all global has none (its max stayed NEG): no weights
        keep = m_i > NEG
        l_i = tl.where(keep, l_i, 0.0)
        acc_k = tl.where(keep[:, None], acc_k, 0.0)
        acc_v = tl.where(keep[:, None], acc_v, 0.0)
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    # cL = sum_i R_i log R_i. (Equal to qt . aL - lse, which would save the p * logit term per
    # score, but keeping qt live to the end costs registers per thread: fewer CTAs.)
    c_l = LN2 * (w_i / l_safe - tl.log2(l_safe))
    if GLOBAL:  # ... and its block no weight in the L-steps: an L-logit below NEG
        c_l = tl.where(l_i > 0, c_l, -NEG)
    # aL = s * R @ k is stored as min(s, 1) * R @ k, in the input dtype: R @ k is a convex combination
    # of keys, so it always fits, while s * R @ k overflowed float16 for a scale above 1 (keys of 3e4,
    # s = 2: inf, then NaN outputs). ``_l_scores`` applies max(s, 1) to its float32 dot. For s <= 1
    # (the default, d**-0.5) aL is stored exactly as s * R @ k.
    a_l = (acc_k * (tl.minimum(scale, 1.0) / l_safe)[:, None]).to(al_to.dtype.element_ty)
    orow = (bh64 * b + i_r) * m + blk_r
    tl.store(cl_ptr + orow, c_l, mask=row_in)
    if LSE_OUT:  # the row's exact log-sum-exp, base 2: the L-logit of the query's own block
        tl.store(var[0] + orow, m_i + tl.log2(l_safe), mask=row_in)
    if AL_HOME:
        tl.store(al_to, a_l, mask=row_in[:, None] & dmask[None, :])
    else:
        tl.store(al_to + orow[:, None] * D + dd[None, :], a_l, mask=row_in[:, None] & dmask[None, :])
    if WANT_Y:
        y = acc_v / l_safe[:, None]
        tl.store(y_ptr + orow[:, None] * DV + ddv[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=row_in[:, None] & dvmask[None, :])


@triton.jit
def _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k_c, col_in, b, m, dd, dmask, scale, D: tl.constexpr,
              GROUPED: tl.constexpr, TRANS: tl.constexpr, IEEE: tl.constexpr):
    """Base-2 logits ``q . aL - cL`` of queries (j_r) against blocks (j_c, k_c); masked entries are
    NEG. Shape (queries, blocks), or (blocks, queries) with TRANS."""
    crow = (bh64 * b + j_c) * m + k_c
    a_l = tl.load(al_ptr + crow[:, None] * D + dd[None, :], mask=col_in[:, None] & dmask[None, :], other=0.0)
    c_l = tl.load(cl_ptr + crow, mask=col_in, other=0.0) * LOG2E
    return _l_logits(q_t, a_l, c_l, j_r, j_c, col_in, scale, GROUPED, TRANS, IEEE), crow


@triton.jit
def _l_logits(q_t, a_l, c_l, j_r, j_c, col_in, scale, GROUPED: tl.constexpr, TRANS: tl.constexpr,
              IEEE: tl.constexpr):
    """``_l_scores`` on loaded columns: aL (blocks, BD) and base-2 cL (blocks)."""
    # The part of the scale above 1 that ``_r_store`` left out of aL (so that aL cannot overflow),
    # applied to the float32 dot; folded with the base-2 factor into one multiply-add per logit.
    dot_scale = tl.maximum(scale, 1.0) * LOG2E
    if TRANS:
        s = _dot(a_l, tl.trans(q_t), IEEE) * dot_scale - c_l[:, None]
        ok = col_in[:, None]
        if GROUPED:  # block-diagonal: blocks of the query's own offset only
            ok = ok & (j_c[:, None] == j_r[None, :])
    else:
        s = _dot(q_t, tl.trans(a_l), IEEE) * dot_scale - c_l[None, :]
        ok = col_in[None, :]
        if GROUPED:
            ok = ok & (j_c[None, :] == j_r[:, None])
    return tl.where(ok, s, NEG)


@triton.jit
def _pad_rows(bh, t, mask_ptr, dims, sm, GROUPED: tl.constexpr, BQ: tl.constexpr):
    """(input position, is padding) of the rows of tile ``t`` on the batch's grid of m blocks (the
    L-step's ``_tile_origin``; every n < N is in one tile), for ``_zero_rows``."""
    m = dims[3]
    r = tl.arange(0, BQ)
    jz, lz, RZ, GZ = _tile_origin(t, m, BQ, GROUPED)
    j_z = jz + r // RZ
    l_z = lz + r % RZ
    return _pad_at(bh, mask_ptr, dims, sm, j_z, l_z, (r < GZ * RZ) & (l_z < m))


@triton.jit
def _pad_at(bh, mask_ptr, dims, sm, j_z, l_z, inside):
    """(input position, is padding) of the grid rows (offset j_z, block l_z)."""
    H, N, b = dims[0], dims[1], dims[2]
    n = l_z.to(tl.int64) * b + j_z
    inb = inside & (j_z < b) & (n < N)
    real = tl.load(mask_ptr + (bh // H).to(tl.int64) * sm[0] + n * sm[1], mask=inb, other=1)
    return n, inb & (real == 0)


@triton.jit
def _zero_rows(bh, rows, o_ptr, dims, so, DV: tl.constexpr, BQ: tl.constexpr, BDV: tl.constexpr):
    """Zero the output rows ``_pad_rows`` found (the padding tokens' outputs)."""
    n, pad = rows
    ddv = tl.arange(0, BDV)
    obase = _head_base(o_ptr, so, bh // dims[0], bh % dims[0])
    zeros = tl.zeros([BQ, BDV], tl.float32).to(o_ptr.dtype.element_ty)
    tl.store(obase + n[:, None] * so[2] + ddv[None, :] * so[3], zeros, mask=pad[:, None] & (ddv < DV)[None, :])


@triton.jit
def _l_out_tile(
    bh, t, q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, seq, dims, sq, so, scale,
    D: tl.constexpr, DV: tl.constexpr,
    HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    var, EXTRA: tl.constexpr, EXACT_DIAG: tl.constexpr,
):
    """Final L-step, tile ``t`` (below ``_l_count``) of head ``bh``: output rows. ONE_COL: the
    sequence's blocks fit one column tile (no loop in the body; see ``_r_tile``). EXTRA: each row's
    exact column joins its softmax; EXACT_DIAG: its own block column leaves it (``variants.py``)."""
    N, b, m = dims[1], dims[2], dims[3]
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    r = tl.arange(0, BQ)
    ddv = tl.arange(0, BDV)
    dvmask = ddv < DV
    j0, l0, RM, G = _l_rows(t, mb, BQ, GROUPED)
    bh64 = bh.to(tl.int64)
    j_r = j0 + r // RM
    l_r = l0 + r % RM
    row_in = (r < G * RM) & (j_r < b) & (l_r < mb)
    dd = tl.arange(0, BD)
    dmask = dd < D
    tok_r, qv = _token(l_r * b + j_r, row_in, off, L, seq, bi, N, HAS_MASK)
    qbase = _head_base(q_ptr, sq, bi, hi)
    q_t = tl.load(qbase + tok_r[:, None] * sq[2] + dd[None, :] * sq[3], mask=qv[:, None] & dmask[None, :], other=0.0)

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
        s, crow = _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k_c, col_in, b, m, dd, dmask, scale, D, GROUPED, False,
                            IEEE)
        if EXACT_DIAG:
            s = tl.where(_own_block(j_c, k_c, j_r, l_r, False), NEG, s)
        yt = tl.load(y_ptr + crow[:, None] * DV + ddv[None, :], mask=col_in[:, None] & dvmask[None, :], other=0.0)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = alpha * l_i + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(yt.dtype), yt, IEEE)
        m_i = m_new
    if EXTRA:
        m_i, l_i, acc = _with_exact_column(var[0], var[1], bh64, b, m, j_r, l_r, row_in, m_i, l_i, acc, ddv, dvmask, DV)
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    z = acc / l_safe[:, None]
    obase = _head_base(o_ptr, so, bi, hi)
    tl.store(obase + tok_r[:, None] * so[2] + ddv[None, :] * so[3], z.to(o_ptr.dtype.element_ty),
             mask=qv[:, None] & dvmask[None, :])


@triton.jit
def _l_out_home_tile(
    bh, t, q_ptr, home, cl_ptr, y_ptr, seq, dims, sq, scale,
    D: tl.constexpr, DV: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
):
    """Final L-step with aL in the output tensor (``_al_rows``, AL_HOME): tile ``t`` owns whole
    offsets (GROUPED: ``BQ // m_s`` of them; else offset ``t``, its rows in chunks of BQ), with all
    their blocks in one column tile. Every aL of its offsets is loaded before the first output row is
    computed, and the rows it writes are the homes of exactly those aL: no other program reads them.
    The published steps only (no options): the softmax of a row sees every block at once. ``home``:
    (output, spare rows, their rows per head, output strides), as ``_al_rows`` reads it."""
    o_ptr, so = home[0], home[3]
    N, b, m = dims[1], dims[2], dims[3]
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    bh64 = bh.to(tl.int64)
    dd = tl.arange(0, BD)
    dmask = dd < D
    ddv = tl.arange(0, BDV)
    dvmask = ddv < DV
    if GROUPED:
        j0, _, RM, G = _l_rows(t, mb, BQ, True)
        l_end = BQ  # one pass: the tile's rows are its offsets' every query
    else:
        j0, RM, G = t, mb, 1
        l_end = mb
    c = tl.arange(0, BK)
    j_c, k_c, col_in = _lanes(c, 0, j0, RM, G, b, m, GROUPED)
    col_in = _block_ok(j_c, k_c, col_in, mb, off, L)
    a_l = tl.load(_al_rows(home, bh64, bi, hi, k_c, j_c, col_in, off, L, seq, dims, dd, D, HAS_MASK),
                  mask=col_in[:, None] & dmask[None, :], other=0.0)
    crow = (bh64 * b + j_c) * m + k_c
    c_l = tl.load(cl_ptr + crow, mask=col_in, other=0.0) * LOG2E
    y_at = y_ptr + crow[:, None] * DV + ddv[None, :]
    y_in = col_in[:, None] & dvmask[None, :]
    if not GROUPED:  # loaded once for every row chunk (sm_90: 57 KB of shared memory against 90 KB)
        yt = tl.load(y_at, mask=y_in, other=0.0)
    qbase = _head_base(q_ptr, sq, bi, hi)
    obase = _head_base(o_ptr, so, bi, hi)
    r = tl.arange(0, BQ)
    for l0 in range(0, l_end, BQ):
        j_r, l_r, row_in = _lanes(r, l0, j0, RM, G, b, mb, GROUPED)
        tok_r, qv = _token(l_r * b + j_r, row_in, off, L, seq, bi, N, HAS_MASK)
        q_t = tl.load(qbase + tok_r[:, None] * sq[2] + dd[None, :] * sq[3], mask=qv[:, None] & dmask[None, :],
                      other=0.0)
        s = _l_logits(q_t, a_l, c_l, j_r, j_c, col_in, scale, GROUPED, False, IEEE)
        if GROUPED:  # one pass: loaded after the logits, as ``_l_out_tile`` does (fewer registers)
            yt = tl.load(y_at, mask=y_in, other=0.0)
        p = tl.exp2(s - tl.max(s, 1)[:, None])
        l_i = tl.sum(p, 1)
        z = _dot(p.to(yt.dtype), yt, IEEE) / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(obase + tok_r[:, None] * so[2] + ddv[None, :] * so[3], z.to(o_ptr.dtype.element_ty),
                 mask=qv[:, None] & dvmask[None, :])


@triton.jit
def _zero_offset_rows(bh, j, mask_ptr, o_ptr, dims, sm, so, DV: tl.constexpr, BQ: tl.constexpr,
                      BDV: tl.constexpr):
    """Zero the output rows of the padding tokens at offset ``j`` of the batch's grid of m blocks
    (a looped ``_l_out_home_tile``'s share of ``_zero_rows``)."""
    r = tl.arange(0, BQ)
    for l0 in range(0, dims[3], BQ):
        _zero_rows(bh, _pad_at(bh, mask_ptr, dims, sm, j + r * 0, l0 + r, l0 + r < dims[3]), o_ptr, dims, so, DV, BQ,
                   BDV)


@triton.jit
def _l_sum_stats(q_t, s, al_ptr, cl_ptr, bh64, j_r, j_c, c, mb, off, L, b, m, dd, dmask, scale, D: tl.constexpr,
                 GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr, BQ: tl.constexpr,
                 BK: tl.constexpr, l_r, row_in, var, EXTRA: tl.constexpr, EXACT_DIAG: tl.constexpr):
    """Each query's softmax weights of a non-final L-step tile (blocks, queries): its statistics over
    all the blocks of its offset come from ``s`` itself when they fit the tile's columns (GROUPED,
    ONE_COL); otherwise they are recomputed over the other column tiles. EXTRA: with each query's
    exact column; EXACT_DIAG: without its own block column (``variants.py``)."""
    if GROUPED or ONE_COL:
        m_i = tl.max(s, 0)
        if EXTRA:
            e = _exact_logit(var[0], bh64, b, m, j_r, l_r, row_in)
            m_i = tl.maximum(m_i, e)
        p = tl.exp2(s - m_i[None, :])
        l_i = tl.sum(p, 0)
        if EXTRA:
            l_i += tl.exp2(e - m_i)
    else:
        m_i = tl.full([BQ], NEG, tl.float32)
        l_i = tl.zeros([BQ], tl.float32)
        for c1 in range(0, mb, BK):
            k2 = c1 + c
            s2, _ = _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k2, _block_ok(j_c, k2, k2 < m, mb, off, L),
                              b, m, dd, dmask, scale, D, GROUPED, True, IEEE)
            if EXACT_DIAG:
                s2 = tl.where(_own_block(j_c, k2, j_r, l_r, True), NEG, s2)
            m_new = tl.maximum(m_i, tl.max(s2, 0))
            l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s2 - m_new[None, :]), 0)
            m_i = m_new
        if EXTRA:
            e = _exact_logit(var[0], bh64, b, m, j_r, l_r, row_in)
            m_new = tl.maximum(m_i, e)
            l_i = l_i * tl.exp2(m_i - m_new) + tl.exp2(e - m_new)
            m_i = m_new
        p = tl.exp2(s - m_i[None, :])
    return p, l_i


@triton.jit
def _l_sum_tile(
    bh, t, q_ptr, al_ptr, cl_ptr, sum_ptr, seq, dims, sq, scale,
    D: tl.constexpr,
    HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, var, EXTRA: tl.constexpr, EXACT_DIAG: tl.constexpr,
):
    """Non-final L-step, tile ``t`` (below ``_l_count``) of head ``bh``: summaries aR/cR of a tile of
    columns (block k, offset j) for the next R-step, summed over the queries (rows) in chunks of BQ."""
    N, b, m = dims[1], dims[2], dims[3]
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    j0, k0, RM, G = _l_rows(t, mb, BK, GROUPED)
    bh64 = bh.to(tl.int64)
    dd = tl.arange(0, BD)
    dmask = dd < D
    c = tl.arange(0, BK)
    j_c = j0 + c // RM
    k_c = k0 + c % RM
    col_in = _block_ok(j_c, k_c, (c < G * RM) & (j_c < b), mb, off, L)
    qbase = _head_base(q_ptr, sq, bi, hi)
    r = tl.arange(0, BQ)
    a_r = tl.zeros([BK, BD], tl.float32)
    c_r = tl.zeros([BK], tl.float32)
    if GROUPED:
        l_end = BQ
    else:
        l_end = mb
    for l0 in range(0, l_end, BQ):
        j_r, l_r, row_in = _lanes(r, l0, j0, RM, G, b, mb, GROUPED)
        tok_r, qv = _token(l_r * b + j_r, row_in, off, L, seq, bi, N, HAS_MASK)
        q_t = tl.load(qbase + tok_r[:, None] * sq[2] + dd[None, :] * sq[3], mask=qv[:, None] & dmask[None, :],
                      other=0.0)
        # Transposed (blocks, queries): the weights are then the first operand of the dot that sums
        # over the queries, with no transpose in registers (fewer registers per thread).
        s, _ = _l_scores(q_t, al_ptr, cl_ptr, bh64, j_r, j_c, k_c, col_in, b, m, dd, dmask, scale, D, GROUPED, True,
                         IEEE)
        if EXACT_DIAG:  # the own block's weight is the exact column's: no query feeds its own block
            s = tl.where(_own_block(j_c, k_c, j_r, l_r, True), NEG, s)
        p, l_i = _l_sum_stats(q_t, s, al_ptr, cl_ptr, bh64, j_r, j_c, c, mb, off, L, b, m, dd, dmask, scale, D,
                              GROUPED, ONE_COL, IEEE, BQ, BK, l_r, row_in, var, EXTRA, EXACT_DIAG)
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        # Padding queries put no weight anywhere.
        p = tl.where(qv[None, :], p / l_safe[None, :], 0.0)
        a_r += _dot(p.to(q_t.dtype), q_t, IEEE)
        c_r += tl.sum(p, 1)
    summ = a_r / tl.where(c_r > 0, c_r, 1.0)[:, None]
    srow = (bh64 * m + k_c) * b + j_c
    tl.store(sum_ptr + srow[:, None] * D + dd[None, :], summ.to(sum_ptr.dtype.element_ty),
             mask=col_in[:, None] & dmask[None, :])
