"""The op's two options in the kernels (docs/algorithm.md, section 7; ``kernels/variants.py`` is
the reference): global keys and exact diagonal blocks.

Both give each query one extra column in its L-softmax, its "exact column": an exact softmax over
a set of keys of its own, as a base-2 logit (the set's log-sum-exp) in ``ex_l`` (BH, b, m) and a
value (the softmax applied to v) in ``ex_y`` (BH, b, m, DV), by offset like cL and Y. With exact
diagonal blocks (T >= 2) the set holds the query's own block: the first R-step, whose rows are the
queries themselves, writes it (``stages._r_store``); the query's own block column then carries no
weight in any L-step. With global keys it holds them too: ``_exact_tile`` merges them in, once per
query, and every L-step reuses the column (``G`` columns folded into one).

Global keys, per (sequence, head), chosen by ``_select_globals`` in one program: the sum of the
real queries (in rank order, in chunks of a fixed size, so the sums and the choice are bit-for-bit
the same whatever padding surrounds the sequence), one score per real key, then ``G`` passes that
each take the best key not yet taken, the earliest on ties. It writes their input positions
(``gsel``, (BH, BG)) and a flag per rank (``gflag``, (BH, N)) that the R-steps read: global keys
are padding to R.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    LOG2E,
    NEG,
    _after_previous_grid,
    _dot,
    _head_base,
    _head_sequence,
    _r_count,
    _seq_blocks,
    _tile_origin,
    _token,
)

TAKEN = tl.constexpr(-3.0e38)  # below any score: a key already taken, or no key
CH = tl.constexpr(64)  # ranks per chunk of the choice: fixed, so its sums do not depend on N


@triton.jit
def _not_global(gflag_ptr, bh64, N, rank, ok):
    """``ok`` without the global keys (by rank in the sequence)."""
    return ok & (tl.load(gflag_ptr + bh64 * N + rank, mask=ok, other=1) == 0)


@triton.jit
def _own_block(j_c, k_c, j_r, l_r, TRANS: tl.constexpr):
    """Where a column (offset j_c, block k_c) is the query (j_r, l_r)'s own block; (queries,
    blocks), or (blocks, queries) with TRANS."""
    if TRANS:
        return (k_c[:, None] == l_r[None, :]) & (j_c[:, None] == j_r[None, :])
    else:
        return (k_c[None, :] == l_r[:, None]) & (j_c[None, :] == j_r[:, None])


@triton.jit
def _exact_logit(ex_l_ptr, bh64, b, m, j_r, l_r, ok):
    """Base-2 logits of the exact columns of queries (j_r, l_r); NEG where ``ok`` is off."""
    return tl.load(ex_l_ptr + (bh64 * b + j_r) * m + l_r, mask=ok, other=NEG)


@triton.jit
def _with_exact_column(ex_l_ptr, ex_y_ptr, bh64, b, m, j_r, l_r, row_in, m_i, l_i, acc, ddv, dvmask,
                       DV: tl.constexpr):
    """The online softmax of an output L-step (running max, sum, weighted values) with each row's
    exact column added."""
    qrow = (bh64 * b + j_r) * m + l_r
    e = tl.load(ex_l_ptr + qrow, mask=row_in, other=NEG)
    ye = tl.load(ex_y_ptr + qrow[:, None] * DV + ddv[None, :], mask=row_in[:, None] & dvmask[None, :], other=0.0)
    m_new = tl.maximum(m_i, e)
    alpha = tl.exp2(m_i - m_new)
    pe = tl.exp2(e - m_new)
    return m_new, alpha * l_i + pe, acc * alpha[:, None] + pe[:, None] * ye.to(tl.float32)


@triton.jit
def _rank_rows(ptr, strides, bh, seq, dims, r, L, off, dd, dmask, HAS_MASK: tl.constexpr):
    """Rows of ranks ``r`` (below L) of head ``bh`` of a (batch, head, token, dim) tensor, float32."""
    bi = bh // dims[0]
    tok, ok = _token(r + off, r < L, off, L, seq, bi, dims[1], HAS_MASK)
    base = _head_base(ptr, strides, bi, bh % dims[0])
    rows = tl.load(base + tok[:, None] * strides[2] + dd[None, :] * strides[3], mask=ok[:, None] & dmask[None, :],
                   other=0.0)
    return rows.to(tl.float32)


@triton.jit
def _select_globals(bh, q_ptr, k_ptr, score_ptr, gsel_ptr, gflag_ptr, seq, dims, sq, sk, G,
                    D: tl.constexpr, HAS_MASK: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr):
    """The global keys of head ``bh`` (module docstring): ``gsel``, ``gflag``."""
    N = dims[1]
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    bh64 = bh.to(tl.int64)
    c = tl.arange(0, CH)
    dd = tl.arange(0, BD)
    dmask = dd < D
    acc = tl.zeros([CH, BD], tl.float32)
    for r0 in range(0, L, CH):
        acc += _rank_rows(q_ptr, sq, bh, seq, dims, r0 + c, L, off, dd, dmask, HAS_MASK)
    q_sum = tl.sum(acc, 0)
    for r0 in range(0, L, CH):
        kt = _rank_rows(k_ptr, sk, bh, seq, dims, r0 + c, L, off, dd, dmask, HAS_MASK)
        tl.store(score_ptr + bh64 * N + r0 + c, tl.sum(kt * q_sum[None, :], 1), mask=r0 + c < L)
    tl.debug_barrier()  # the scores, written by some threads, are read by all
    g = tl.arange(0, BG)
    count = tl.minimum(G, L)
    chosen = tl.full([BG], -1, tl.int32)
    for gi in range(0, count):
        best = tl.max(tl.full([CH], TAKEN, tl.float32), 0)
        best_r = tl.max(tl.full([CH], -1, tl.int32), 0)
        for r0 in range(0, L, CH):
            r = r0 + c
            taken = tl.max((r[:, None] == chosen[None, :]).to(tl.int32), 1) > 0
            sc = tl.load(score_ptr + bh64 * N + r, mask=(r < L) & ~taken, other=TAKEN)
            top = tl.max(sc, 0)
            first = tl.min(tl.where(sc == top, r, 2147483647), 0)
            better = top > best  # strictly: on ties the earlier chunk keeps it
            best_r = tl.where(better, first, best_r)
            best = tl.where(better, top, best)
        chosen = tl.where(g == gi, best_r, chosen)
    tok, ok = _token(chosen + off, g < count, off, L, seq, bi, N, HAS_MASK)
    tl.store(gsel_ptr + bh64 * BG + g, tok, mask=ok)
    for r0 in range(0, L, CH):
        r = r0 + c
        flag = tl.max((r[:, None] == chosen[None, :]).to(tl.int32), 1)
        tl.store(gflag_ptr + bh64 * N + r, flag.to(tl.int8), mask=r < L)


@triton.jit
def _exact_tile(bh, t, q_ptr, k_ptr, v_ptr, ex_l_ptr, ex_y_ptr, gsel_ptr, seq, dims, sq, sk, sv, scale, G,
                D: tl.constexpr, DV: tl.constexpr, MERGE_DIAG: tl.constexpr, HAS_MASK: tl.constexpr,
                GROUPED: tl.constexpr, IEEE: tl.constexpr, BQ: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr,
                BDV: tl.constexpr):
    """Exact columns of the queries of R-step tile ``t`` (slots of blocks below m_s): the softmax
    over the global keys, merged with the exact diagonal block the first R-step wrote (MERGE_DIAG)."""
    N, b, m = dims[1], dims[2], dims[3]
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    k0, q0, RB, GB = _tile_origin(t, b, BQ, GROUPED)
    bh64 = bh.to(tl.int64)
    r = tl.arange(0, BQ)
    blk_r = k0 + r // RB
    i_r = q0 + r % RB
    row_in = (r < GB * RB) & (i_r < b) & (blk_r < mb)
    dd = tl.arange(0, BD)
    ddv = tl.arange(0, BDV)
    dmask = dd < D
    dvmask = ddv < DV
    tok_r, qv = _token(blk_r * b + i_r, row_in, off, L, seq, bi, N, HAS_MASK)
    qt = tl.load(_head_base(q_ptr, sq, bi, hi) + tok_r[:, None] * sq[2] + dd[None, :] * sq[3],
                 mask=qv[:, None] & dmask[None, :], other=0.0)
    g = tl.arange(0, BG)
    gk = g < tl.minimum(G, L)
    gpos = tl.load(gsel_ptr + bh64 * BG + g, mask=gk, other=0)
    kg = tl.load(_head_base(k_ptr, sk, bi, hi) + gpos[:, None] * sk[2] + dd[None, :] * sk[3],
                 mask=gk[:, None] & dmask[None, :], other=0.0)
    vg = tl.load(_head_base(v_ptr, sv, bi, hi) + gpos[:, None] * sv[2] + ddv[None, :] * sv[3],
                 mask=gk[:, None] & dvmask[None, :], other=0.0)
    s = tl.where(gk[None, :], _dot(qt, tl.trans(kg), IEEE) * (scale * LOG2E), NEG)
    m_i = tl.max(s, 1)
    p = tl.exp2(s - m_i[:, None])
    l_i = tl.sum(p, 1)
    acc = _dot(p.to(vg.dtype), vg, IEEE)
    orow = (bh64 * b + i_r) * m + blk_r
    if MERGE_DIAG:
        m_i, l_i, acc = _with_exact_column(ex_l_ptr, ex_y_ptr, bh64, b, m, i_r, blk_r, row_in, m_i, l_i, acc, ddv,
                                           dvmask, DV)
    tl.store(ex_l_ptr + orow, m_i + tl.log2(l_i), mask=row_in)
    tl.store(ex_y_ptr + orow[:, None] * DV + ddv[None, :], (acc / l_i[:, None]).to(ex_y_ptr.dtype.element_ty),
             mask=row_in[:, None] & dvmask[None, :])


@triton.jit
def _select_kernel(
    q_ptr, k_ptr, score_ptr, gsel_ptr, gflag_ptr, len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off, G,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    D: tl.constexpr, HAS_MASK: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr, PDL: tl.constexpr,
):
    """One program per (batch, head): its global keys."""
    _after_previous_grid(PDL)
    _select_globals(tl.program_id(0), q_ptr, k_ptr, score_ptr, gsel_ptr, gflag_ptr, (len_ptr, off_ptr, tok_ptr),
                    (H, N, b, m, seq_len, pad_off), (stride_qb, stride_qh, stride_qn, stride_qd),
                    (stride_kb, stride_kh, stride_kn, stride_kd), G, D, HAS_MASK, BG, BD)


@triton.jit
def _exact_kernel(
    q_ptr, k_ptr, v_ptr, ex_l_ptr, ex_y_ptr, gsel_ptr, len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off, TILES,
    G, stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, scale,
    D: tl.constexpr, DV: tl.constexpr, MERGE_DIAG: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr,
    IEEE: tl.constexpr, BQ: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PDL: tl.constexpr,
):
    """One program per R-step tile: the exact columns of its queries."""
    _after_previous_grid(PDL)
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    pid = tl.program_id(0)
    bh, t = pid // TILES, pid % TILES
    if t < _r_count(_seq_blocks(seq, dims, bh, HAS_MASK), b, BQ, GROUPED):
        _exact_tile(bh, t, q_ptr, k_ptr, v_ptr, ex_l_ptr, ex_y_ptr, gsel_ptr, seq, dims,
                    (stride_qb, stride_qh, stride_qn, stride_qd), (stride_kb, stride_kh, stride_kn, stride_kd),
                    (stride_vb, stride_vh, stride_vn, stride_vd), scale, G, D, DV, MERGE_DIAG, HAS_MASK, GROUPED, IEEE,
                    BQ, BG, BD, BDV)
