"""The backward pass of MonarchAttention as ``@triton.jit`` programs (docs/algorithm.md, section 9).

The backward rebuilds each step's ``aK = R @ k`` (section 9's ``aL`` is ``s * aK``: the logits are
``s * q . aK - cL``), ``cL``, the summaries and ``Y`` from q, k and v, then walks back step by step. At
T = 1 a training forward keeps its own ``aL, cL, Y`` instead (SAVED: laid out by offset, ``aL``
stored as ``min(s, 1) * aK``, ``stages._r_store``), which the L-programs read in place of the
recomputed ones. Two kinds of program:

* R-programs, one per (batch * head, block k): the block's keys (and values) stay in registers
  while the program loops over the block's rows j in chunks of BQ; every row of ``R_k`` is
  rebuilt exactly from the row vector and the block's keys (all ``b`` keys fit one tile of BB, so
  the row's log-normaliser needs no second pass). ``_r_fwd_kernel`` writes ``aK, cL`` (and ``Y``),
  ``_r_bwd_kernel`` turns ``daK, dcL`` (and ``dY``) into the gradients of the row vectors (the
  queries at step 1, the summaries later) and of the block's keys and values.
* L-programs, one per (batch * head, offset j): the ``m`` blocks of offset j (``aK, cL``, and ``Y``
  or the summaries' gradients) stay in registers while the program loops over the queries
  ``(j, l)`` in chunks of BQ; every row of ``L_j`` is rebuilt exactly. ``_l_fwd_kernel`` writes the
  next step's summaries, ``_l_bwd_kernel`` the gradients of ``aK, cL`` (and ``Y``) and the L-stage's
  part of dq.

Each program owns its rows of every buffer it writes, so gradients are accumulated in float32 with
plain loads and stores, no atomics (launches run one after the other). Intermediates are rows of
``(BH, m, b, .)`` "by block": row ``(bh * m + k) * b + j`` (the forward's kept ones, SAVED: of
``(BH, b, m, .)``, row ``(bh * b + j) * m + k``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import NEG, _dot, _head_base, _head_sequence, _token


@triton.jit
def _load_tokens(ptr, strides, bi, hi, tok, ok, dd, DIM: tl.constexpr):
    """Rows ``tok`` (where ``ok``; zeros elsewhere) of head ``hi`` of sequence ``bi`` of a
    (batch, head, token, dim) tensor."""
    base = _head_base(ptr, strides, bi, hi)
    return tl.load(base + tok[:, None] * strides[2] + dd[None, :] * strides[3], mask=ok[:, None] & (dd < DIM)[None, :],
                   other=0.0)


@triton.jit
def _add_tokens(acc_ptr, bh64, N, tok, ok, x, dd, DIM: tl.constexpr):
    """``acc[bh, tok] += x``, atomically, on a contiguous float32 (BH, N, DIM) accumulator (rows
    where ``ok``), where several programs add to the same rows."""
    ptrs = acc_ptr + (bh64 * N + tok)[:, None] * DIM + dd[None, :]
    tl.atomic_add(ptrs, x, mask=ok[:, None] & (dd < DIM)[None, :])


@triton.jit
def _accumulate(acc_ptr, out_ptr, bh64, N, tok, ok, x, dd, DIM: tl.constexpr, FIRST: tl.constexpr,
                LAST: tl.constexpr):
    """Rows ``tok`` (where ``ok``) of a gradient laid out contiguous (BH, N, DIM): ``x``, plus the
    float32 accumulator's rows unless this is their FIRST part, into the accumulator, or (LAST, the
    rows' final part) into the output in its dtype. One program owns these rows in its launch."""
    at = (bh64 * N + tok)[:, None] * DIM + dd[None, :]
    mask = ok[:, None] & (dd < DIM)[None, :]
    if not FIRST:
        x += tl.load(acc_ptr + at, mask=mask, other=0.0)
    if LAST:
        tl.store(out_ptr + at, x.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(acc_ptr + at, x, mask=mask)


@triton.jit
def _zero_kernel(a_ptr, na, b_ptr, nb, c_ptr, nc, BLOCK: tl.constexpr):
    """Zeros into the first ``na``, ``nb``, ``nc`` elements of three buffers (the gradients at
    padding positions, which no program writes; accumulators added to atomically)."""
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(a_ptr + at, tl.zeros([BLOCK], a_ptr.dtype.element_ty), mask=at < na)
    tl.store(b_ptr + at, tl.zeros([BLOCK], b_ptr.dtype.element_ty), mask=at < nb)
    tl.store(c_ptr + at, tl.zeros([BLOCK], c_ptr.dtype.element_ty), mask=at < nc)


@triton.jit
def _cast_kernel(src_a_ptr, out_a_ptr, na, src_b_ptr, out_b_ptr, nb, BLOCK: tl.constexpr):
    """Two float32 accumulators into their outputs' dtype (blocks longer than a tile)."""
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_a_ptr + at, tl.load(src_a_ptr + at, mask=at < na).to(out_a_ptr.dtype.element_ty), mask=at < na)
    tl.store(out_b_ptr + at, tl.load(src_b_ptr + at, mask=at < nb).to(out_b_ptr.dtype.element_ty), mask=at < nb)


@triton.jit
def _rows(ptr, row, ok, dd, DIM: tl.constexpr):
    """Rows ``row`` of a contiguous (rows, DIM) scratch buffer (zeros where not ``ok``)."""
    return tl.load(ptr + row[:, None] * DIM + dd[None, :], mask=ok[:, None] & (dd < DIM)[None, :], other=0.0)


@triton.jit
def _store_rows(ptr, row, ok, x, dd, DIM: tl.constexpr):
    tl.store(ptr + row[:, None] * DIM + dd[None, :], x.to(ptr.dtype.element_ty), mask=ok[:, None] & (dd < DIM)[None, :])


@triton.jit
def _softmax_rows(x, ok):
    """(p, log p) of each row of float32 logits ``x`` over the columns where ``ok`` (2-D); both 0
    elsewhere and in rows with nothing valid, as ``reference._masked_softmax``."""
    x = tl.where(ok, x, NEG)
    mx = tl.max(x, 1)
    p = tl.where(ok, tl.exp(x - mx[:, None]), 0.0)
    den = tl.sum(p, 1)
    den = tl.where(den > 0, den, 1.0)
    return p / den[:, None], tl.where(ok, x - mx[:, None] - tl.log(den)[:, None], 0.0)


@triton.jit
def _r_probs(s_t, k_t, kv, scale, IEEE: tl.constexpr):
    """Rows of R for row vectors ``s_t`` against a block's keys ``k_t`` (real where ``kv``):
    (R, log R, cL = sum R log R), float32."""
    x = _dot(s_t, tl.trans(k_t), IEEE) * scale
    r, log_r = _softmax_rows(x, kv[None, :])
    return r, log_r, tl.sum(r * log_r, 1)


@triton.jit
def _r_rows(src_ptr, sq, bh64, bi, hi, kb, j, row_in, off, L, seq, dims, dd, D: tl.constexpr,
            FROM_SUMMARY: tl.constexpr, HAS_MASK: tl.constexpr):
    """The R-step's row vectors of rows ``j`` of block ``kb``: the slots' queries (step 1, zero at
    padding slots) or the summaries. Returns (rows, token, real token)."""
    tok, ok = _token(kb * dims[2] + j, row_in, off, L, seq, bi, dims[1], HAS_MASK)
    if FROM_SUMMARY:
        s_t = _rows(src_ptr, (bh64 * dims[3] + kb) * dims[2] + j, row_in, dd, D)
    else:
        s_t = _load_tokens(src_ptr, sq, bi, hi, tok, ok, dd, D)
    return s_t, tok, ok


@triton.jit
def _block_tokens(ptr, strides, bi, hi, kb, i, off, L, seq, dims, dd, DIM: tl.constexpr, HAS_MASK: tl.constexpr):
    """Keys (or values) of block ``kb``, slots ``i``: (tile, token, real)."""
    tok, ok = _token(kb * dims[2] + i, i < dims[2], off, L, seq, bi, dims[1], HAS_MASK)
    return _load_tokens(ptr, strides, bi, hi, tok, ok, dd, DIM), tok, ok


@triton.jit
def _r_fwd_kernel(
    src_ptr, k_ptr, v_ptr, ak_ptr, cl_ptr, y_ptr, len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, scale,
    D: tl.constexpr, DV: tl.constexpr, FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr,
    IEEE: tl.constexpr, BB: tl.constexpr, BQ: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
):
    """One R-step, recomputed: ``aK = R @ k``, ``cL`` and (WANT_Y) ``Y = R @ v`` of every row of
    block ``k`` (all its b rows: a row of a padding slot is read by real queries of other blocks)."""
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    sq = (stride_qb, stride_qh, stride_qn, stride_qd)
    pid = tl.program_id(0)
    bh, kb = pid // m, pid % m
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    if kb < mb:
        bh64 = bh.to(tl.int64)
        i = tl.arange(0, BB)
        dd, ddv, r = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BQ)
        # (Names, not ``_``, for the unused parts: a loop-carried ``_`` must keep one type.)
        k_t, _k_tok, kv = _block_tokens(k_ptr, (stride_kb, stride_kh, stride_kn, stride_kd), bi, hi, kb, i, off, L,
                                        seq, dims, dd, D, HAS_MASK)
        if WANT_Y:
            v_t, _v_tok, _v_ok = _block_tokens(v_ptr, (stride_vb, stride_vh, stride_vn, stride_vd), bi, hi, kb, i, off,
                                               L, seq, dims, ddv, DV, HAS_MASK)
        for j0 in range(0, b, BQ):
            j = j0 + r
            row_in = j < b
            s_t, _s_tok, _s_ok = _r_rows(src_ptr, sq, bh64, bi, hi, kb, j, row_in, off, L, seq, dims, dd, D,
                                         FROM_SUMMARY, HAS_MASK)
            rp, _log_r, c_l = _r_probs(s_t, k_t, kv, scale, IEEE)
            row = (bh64 * m + kb) * b + j
            _store_rows(ak_ptr, row, row_in, _dot(rp.to(k_t.dtype), k_t, IEEE), dd, D)
            tl.store(cl_ptr + row, c_l, mask=row_in)
            if WANT_Y:
                _store_rows(y_ptr, row, row_in, _dot(rp.to(v_t.dtype), v_t, IEEE), ddv, DV)


@triton.jit
def _r_bwd_chunk(s_t, k_t, v_t, kv, dak, dcl, dy, scale, WANT_Y: tl.constexpr, IEEE: tl.constexpr):
    """One chunk of rows of an R-step, backward (section 9): from ``daK, dcL`` (and ``dY``) of the
    rows, the gradient of the row vectors ``dS``, and the chunk's parts of ``dk`` and ``dv``."""
    rp, log_r, c_l = _r_probs(s_t, k_t, kv, scale, IEEE)
    dt = k_t.dtype
    drp = _dot(dak.to(dt), tl.trans(k_t), IEEE)  # daK . k_i
    if WANT_Y:
        drp += _dot(dy.to(v_t.dtype), tl.trans(v_t), IEEE)  # + dY . v_i
        dv = _dot(tl.trans(rp.to(v_t.dtype)), dy.to(v_t.dtype), IEEE)
    else:
        dv = tl.zeros(v_t.shape, tl.float32)
    dx = rp * (drp + dcl[:, None] * (log_r - c_l[:, None]) - tl.sum(rp * drp, 1)[:, None])
    dx_t = dx.to(dt)
    d_s = _dot(dx_t, k_t, IEEE) * scale
    dk = _dot(tl.trans(dx_t), s_t, IEEE) * scale + _dot(tl.trans(rp.to(dt)), dak.to(dt), IEEE)
    return d_s, dk, dv


@triton.jit
def _r_bwd_kernel(
    src_ptr, k_ptr, v_ptr, dak_ptr, dcl_ptr, dy_ptr, ds_ptr, dq_ptr, dk_ptr, dv_ptr, dqo_ptr, dko_ptr, dvo_ptr,
    len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, scale,
    D: tl.constexpr, DV: tl.constexpr, FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr,
    IEEE: tl.constexpr, BB: tl.constexpr, BQ: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    DK_FIRST: tl.constexpr, DK_LAST: tl.constexpr,
):
    """One R-step, backward, for block ``k``: ``dS`` goes to the summaries' gradient (``ds``, from
    step 2 on) or, at step 1, with dq's float32 accumulator (the L-stages' parts), into dq in its
    dtype (``dqo``). The block's dk goes to its accumulator once, after the loop over its rows
    (DK_FIRST: the last step, the first to run; DK_LAST: step 1, into ``dko``); its dv (last step
    only) straight into ``dvo``. ``dv_ptr``: unused (the wide kernel's accumulator)."""
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    sq = (stride_qb, stride_qh, stride_qn, stride_qd)
    pid = tl.program_id(0)
    bh, kb = pid // m, pid % m
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    if kb < mb:
        bh64 = bh.to(tl.int64)
        i = tl.arange(0, BB)
        dd, ddv, r = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BQ)
        k_t, k_tok, kv = _block_tokens(k_ptr, (stride_kb, stride_kh, stride_kn, stride_kd), bi, hi, kb, i, off, L,
                                       seq, dims, dd, D, HAS_MASK)
        if WANT_Y:
            v_t, v_tok, v_ok = _block_tokens(v_ptr, (stride_vb, stride_vh, stride_vn, stride_vd), bi, hi, kb, i, off, L,
                                      seq, dims, ddv, DV, HAS_MASK)
        else:  # earlier steps have no Y: v takes no part
            v_t = tl.zeros([BB, BDV], k_t.dtype)
        dk = tl.zeros([BB, BD], tl.float32)
        dv = tl.zeros([BB, BDV], tl.float32)
        for j0 in range(0, b, BQ):
            j = j0 + r
            row_in = j < b
            s_t, tok, ok = _r_rows(src_ptr, sq, bh64, bi, hi, kb, j, row_in, off, L, seq, dims, dd, D, FROM_SUMMARY,
                                   HAS_MASK)
            row = (bh64 * m + kb) * b + j
            if WANT_Y:
                dy = _rows(dy_ptr, row, row_in, ddv, DV)
            else:
                dy = tl.zeros([BQ, BDV], tl.float32)
            d_s, dk_j, dv_j = _r_bwd_chunk(s_t, k_t, v_t, kv, _rows(dak_ptr, row, row_in, dd, D),
                                           tl.load(dcl_ptr + row, mask=row_in, other=0.0), dy, scale, WANT_Y, IEEE)
            dk += dk_j
            dv += dv_j
            if FROM_SUMMARY:
                _store_rows(ds_ptr, row, row_in, d_s, dd, D)
            else:
                _accumulate(dq_ptr, dqo_ptr, bh64, N, tok, ok, d_s, dd, D, False, True)
        _accumulate(dk_ptr, dko_ptr, bh64, N, k_tok, kv, dk, dd, D, DK_FIRST, DK_LAST)
        if WANT_Y:
            _accumulate(dvo_ptr, dvo_ptr, bh64, N, k_tok, kv, dv, ddv, DV, True, True)


@triton.jit
def _l_columns(ak_ptr, cl_ptr, bh64, j, m, b, c, mb, dd, D: tl.constexpr, SAVED: tl.constexpr):
    """The blocks ``c`` of offset ``j`` as an L-step sees them: (row of each in the backward's own
    buffers, its row in ``aK, cL, Y``, real, aK tile, cL). SAVED: ``aK, cL, Y`` are the forward's,
    laid out by offset, (BH, b, m, .): row ``(bh * b + j) * m + k``."""
    col = (bh64 * m + c) * b + j
    if SAVED:
        src = (bh64 * b + j) * m + c
    else:
        src = col
    col_ok = c < mb
    return col, src, col_ok, _rows(ak_ptr, src, col_ok, dd, D), tl.load(cl_ptr + src, mask=col_ok, other=0.0)


@triton.jit
def _ak_scale(scale, SAVED: tl.constexpr):
    """The factor of the stored ``aK`` in ``aL`` (the logits' dot, dq): ``s``; for the forward's
    ``aL`` (SAVED), stored as ``min(s, 1) * R @ k``, the rest: ``max(s, 1)``."""
    if SAVED:
        a_scale = tl.maximum(scale, 1.0)
    else:
        a_scale = scale
    return a_scale


@triton.jit
def _l_extras(y_ptr, ds_ptr, sm_ptr, cr_ptr, col, src, col_ok, dd, ddv, D: tl.constexpr, DV: tl.constexpr,
              FINAL: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr):
    """What an L-step's backward reads per block besides ``aK, cL``: (Y, G, h). FINAL: ``Y`` (at
    rows ``src``); otherwise ``G = dS / cR`` (0 where ``cR = 0``: a zero summary, no query weighs on
    it) and ``h = G . S`` of the next step's summaries."""
    if FINAL:
        y_t = _rows(y_ptr, src, col_ok, ddv, DV)
        g_t = tl.zeros([BM, BD], tl.float32)
        h = tl.zeros([BM], tl.float32)
    else:
        y_t = tl.zeros([BM, BDV], y_ptr.dtype.element_ty)
        c_r = tl.load(cr_ptr + col, mask=col_ok, other=0.0)
        g_t = _rows(ds_ptr, col, col_ok & (c_r > 0), dd, D) / tl.where(c_r > 0, c_r, 1.0)[:, None]
        h = tl.sum(g_t * _rows(sm_ptr, col, col_ok, dd, D).to(tl.float32), 1)
    return y_t, g_t, h


@triton.jit
def _l_logits(q_t, ak_t, c_l, col_ok, scale, IEEE: tl.constexpr):
    """``s * q . aK - cL``, float32; NEG at blocks that are not real."""
    return tl.where(col_ok[None, :], _dot(q_t, tl.trans(ak_t), IEEE) * scale - c_l[None, :], NEG)


@triton.jit
def _l_probs(q_t, ak_t, c_l, col_ok, scale, lse, STATS: tl.constexpr, IEEE: tl.constexpr):
    """Rows of L for queries ``q_t``: the softmax over the real blocks, all in this tile, or
    (STATS) one tile of them, normalised by each row's log-normaliser ``lse``."""
    g = _l_logits(q_t, ak_t, c_l, col_ok, scale, IEEE)
    if STATS:
        p = tl.where(col_ok[None, :], tl.exp(g - lse[:, None]), 0.0)
    else:
        p, _ = _softmax_rows(g, col_ok[None, :])
    return p


@triton.jit
def _l_dl(q_t, qv, do_t, y_t, g_t, h, FINAL: tl.constexpr, IEEE: tl.constexpr):
    """The gradient of the rows of L (section 9): ``dZ . Y`` (FINAL) or ``G . q - h`` (0 for
    padding queries)."""
    if FINAL:
        d_l = _dot(do_t, tl.trans(y_t), IEEE)
    else:
        d_l = tl.where(qv[:, None], _dot(q_t.to(tl.float32), tl.trans(g_t), IEEE) - h[None, :], 0.0)
    return d_l


@triton.jit
def _l_query_rows(l0, r, j, b, mb, off, L, seq, bi, N, q_ptr, sq, hi, dd, D: tl.constexpr, HAS_MASK: tl.constexpr):
    """A chunk of the queries ``(j, l)`` of offset ``j``: (token, real, q rows, in range)."""
    row_in = l0 + r < mb
    tok, qv = _token((l0 + r) * b + j, row_in, off, L, seq, bi, N, HAS_MASK)
    return tok, qv, _load_tokens(q_ptr, sq, bi, hi, tok, qv, dd, D), row_in


@triton.jit
def _l_grad_out(do_ptr, so, bi, hi, tok, qv, ddv, y_ptr, DV: tl.constexpr, FINAL: tl.constexpr):
    """The output's gradient at a chunk of queries, in Y's dtype (FINAL; zeros otherwise)."""
    if FINAL:
        do_t = _load_tokens(do_ptr, so, bi, hi, tok, qv, ddv, DV).to(y_ptr.dtype.element_ty)
    else:
        do_t = tl.zeros([tok.shape[0], ddv.shape[0]], y_ptr.dtype.element_ty)
    return do_t


@triton.jit
def _row_stats(lse_ptr, dlt_ptr, row, row_in, STATS: tl.constexpr):
    """(log-normaliser, sum_k L dL) of a chunk of queries, from ``_l_stats_kernel`` (STATS)."""
    if STATS:
        lse = tl.load(lse_ptr + row, mask=row_in, other=0.0)
        delta = tl.load(dlt_ptr + row, mask=row_in, other=0.0)
    else:
        lse = tl.zeros(row.shape, tl.float32)
        delta = lse
    return lse, delta


@triton.jit
def _l_program(b, CT):
    """(head, offset, column tile) of an L-program: ``CT`` tiles of blocks per offset."""
    pid = tl.program_id(0)
    return pid // (b * CT), (pid // CT) % b, pid % CT


@triton.jit
def _l_fwd_kernel(
    q_ptr, ak_ptr, cl_ptr, sm_ptr, cr_ptr, lse_ptr, len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off, CT,
    stride_qb, stride_qh, stride_qn, stride_qd, scale,
    D: tl.constexpr, STATS: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr, BM: tl.constexpr,
    BQ: tl.constexpr, BD: tl.constexpr,
):
    """A non-final L-step, recomputed, for offset ``j`` (STATS: one tile of its blocks, with the
    rows' log-normalisers from ``_l_stats_kernel``): the next step's summaries ``aR / cR`` and
    ``cR`` (padding queries put no weight anywhere; ``cR = 0`` gives a zero summary)."""
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    sq = (stride_qb, stride_qh, stride_qn, stride_qd)
    bh, j, ct = _l_program(b, CT)
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    bh64 = bh.to(tl.int64)
    dd, r = tl.arange(0, BD), tl.arange(0, BQ)
    col, _src, col_ok, ak_t, c_l = _l_columns(ak_ptr, cl_ptr, bh64, j, m, b, ct * BM + tl.arange(0, BM), mb, dd, D,
                                              False)
    a_r = tl.zeros([BM, BD], tl.float32)
    c_r = tl.zeros([BM], tl.float32)
    for l0 in range(0, tl.where(ct * BM < mb, mb, 0), BQ):
        tok, qv, q_t, row_in = _l_query_rows(l0, r, j, b, mb, off, L, seq, bi, N, q_ptr, sq, hi, dd, D, HAS_MASK)
        lse, _delta = _row_stats(lse_ptr, lse_ptr, (bh64 * m + l0 + r) * b + j, row_in, STATS)
        w = tl.where(qv[:, None], _l_probs(q_t, ak_t, c_l, col_ok, scale, lse, STATS, IEEE), 0.0)
        a_r += _dot(tl.trans(w.to(q_t.dtype)), q_t, IEEE)
        c_r += tl.sum(w, 0)
    _store_rows(sm_ptr, col, col_ok, a_r / tl.where(c_r > 0, c_r, 1.0)[:, None], dd, D)
    tl.store(cr_ptr + col, c_r, mask=col_ok)


@triton.jit
def _l_stats_kernel(
    q_ptr, ak_ptr, cl_ptr, y_ptr, do_ptr, ds_ptr, sm_ptr, cr_ptr, lse_ptr, dlt_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, CT,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_ob, stride_oh, stride_on, stride_od, scale,
    D: tl.constexpr, DV: tl.constexpr, WANT_DELTA: tl.constexpr, FINAL: tl.constexpr, HAS_MASK: tl.constexpr,
    IEEE: tl.constexpr, BM: tl.constexpr, BQ: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    SAVED: tl.constexpr = False,
):
    """Where the blocks of an offset span several tiles (STATS): per query ``(j, l)``, over all
    its blocks, the L-softmax's log-normaliser and (WANT_DELTA) ``sum_k L dL``, online. SAVED:
    ``aK, cL, Y`` are the forward's (``_l_columns``)."""
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    sq = (stride_qb, stride_qh, stride_qn, stride_qd)
    bh, j, _ct = _l_program(b, 1)
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    bh64 = bh.to(tl.int64)
    dd, ddv, r, c = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BQ), tl.arange(0, BM)
    a_scale = _ak_scale(scale, SAVED)
    for l0 in range(0, mb, BQ):
        tok, qv, q_t, row_in = _l_query_rows(l0, r, j, b, mb, off, L, seq, bi, N, q_ptr, sq, hi, dd, D, HAS_MASK)
        do_t = _l_grad_out(do_ptr, (stride_ob, stride_oh, stride_on, stride_od), bi, hi, tok, qv, ddv, y_ptr, DV,
                           FINAL & WANT_DELTA)
        mx = tl.full([BQ], NEG, tl.float32)
        den = tl.zeros([BQ], tl.float32)
        acc = tl.zeros([BQ], tl.float32)
        for c0 in range(0, mb, BM):
            col, src, col_ok, ak_t, c_l = _l_columns(ak_ptr, cl_ptr, bh64, j, m, b, c0 + c, mb, dd, D, SAVED)
            g = _l_logits(q_t, ak_t, c_l, col_ok, a_scale, IEEE)
            m_new = tl.maximum(mx, tl.max(g, 1))
            alpha = tl.exp(mx - m_new)
            p = tl.where(col_ok[None, :], tl.exp(g - m_new[:, None]), 0.0)
            den = den * alpha + tl.sum(p, 1)
            if WANT_DELTA:
                y_t, g_t, h = _l_extras(y_ptr, ds_ptr, sm_ptr, cr_ptr, col, src, col_ok, dd, ddv, D, DV, FINAL, BM, BD,
                                        BDV)
                acc = acc * alpha + tl.sum(p * _l_dl(q_t, qv, do_t, y_t, g_t, h, FINAL, IEEE), 1)
            mx = m_new
        row = (bh64 * m + l0 + r) * b + j
        tl.store(lse_ptr + row, mx + tl.log(den), mask=row_in)
        if WANT_DELTA:
            tl.store(dlt_ptr + row, acc / den, mask=row_in)


@triton.jit
def _l_bwd_chunk(q_t, qv, ak_t, c_l, col_ok, y_t, do_t, g_t, h, lse, delta, a_scale, FINAL: tl.constexpr,
                 STATS: tl.constexpr, IEEE: tl.constexpr):
    """One chunk of queries of an L-step, backward (section 9): the rows of L, their logits'
    gradient ``dg`` and the chunk's dq. STATS: ``sum_k L dL`` of each row is ``delta``. ``a_scale``:
    ``aL / aK`` (``_ak_scale``)."""
    p = _l_probs(q_t, ak_t, c_l, col_ok, a_scale, lse, STATS, IEEE)
    d_l = _l_dl(q_t, qv, do_t, y_t, g_t, h, FINAL, IEEE)
    if FINAL:
        dq = tl.zeros(q_t.shape, tl.float32)
    else:
        p = tl.where(qv[:, None], p, 0.0)
        dq = _dot(p, g_t, IEEE)  # through the summaries' weighted sum of queries
    if STATS:
        inner = delta
    else:
        inner = tl.sum(p * d_l, 1)
    dg = p * (d_l - inner[:, None])
    dq += _dot(dg.to(ak_t.dtype), ak_t, IEEE) * a_scale
    return p, dg, dq


@triton.jit
def _l_bwd_kernel(
    q_ptr, ak_ptr, cl_ptr, y_ptr, do_ptr, ds_ptr, sm_ptr, cr_ptr, lse_ptr, dlt_ptr, dak_ptr, dcl_ptr, dy_ptr, dq_ptr,
    len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off, CT,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_ob, stride_oh, stride_on, stride_od, scale,
    D: tl.constexpr, DV: tl.constexpr, FINAL: tl.constexpr, STATS: tl.constexpr, HAS_MASK: tl.constexpr,
    IEEE: tl.constexpr, BM: tl.constexpr, BQ: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    DQ_FIRST: tl.constexpr, SAVED: tl.constexpr = False,
):
    """An L-step, backward, for offset ``j`` (STATS: one tile of its blocks, with the rows'
    statistics from ``_l_stats_kernel``, and dq added atomically to a zeroed accumulator): writes
    ``daK, dcL`` (and, FINAL, ``dY``) of the blocks, summed over the offset's queries, and adds the
    L-stage's part of dq (DQ_FIRST: stores it, the accumulator's first part). SAVED (T = 1 only):
    ``aK, cL, Y`` are the forward's (``_l_columns``)."""
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    sq = (stride_qb, stride_qh, stride_qn, stride_qd)
    bh, j, ct = _l_program(b, CT)
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    bh64 = bh.to(tl.int64)
    dd, ddv, r = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BQ)
    col, src, col_ok, ak_t, c_l = _l_columns(ak_ptr, cl_ptr, bh64, j, m, b, ct * BM + tl.arange(0, BM), mb, dd, D,
                                             SAVED)
    y_t, g_t, h = _l_extras(y_ptr, ds_ptr, sm_ptr, cr_ptr, col, src, col_ok, dd, ddv, D, DV, FINAL, BM, BD, BDV)
    a_scale = _ak_scale(scale, SAVED)
    dak = tl.zeros([BM, BD], tl.float32)
    dcl = tl.zeros([BM], tl.float32)
    dy = tl.zeros([BM, BDV], tl.float32)
    for l0 in range(0, tl.where(ct * BM < mb, mb, 0), BQ):
        tok, qv, q_t, row_in = _l_query_rows(l0, r, j, b, mb, off, L, seq, bi, N, q_ptr, sq, hi, dd, D, HAS_MASK)
        do_t = _l_grad_out(do_ptr, (stride_ob, stride_oh, stride_on, stride_od), bi, hi, tok, qv, ddv, y_ptr, DV,
                           FINAL)
        lse, delta = _row_stats(lse_ptr, dlt_ptr, (bh64 * m + l0 + r) * b + j, row_in, STATS)
        p, dg, dq = _l_bwd_chunk(q_t, qv, ak_t, c_l, col_ok, y_t, do_t, g_t, h, lse, delta, a_scale, FINAL, STATS,
                                 IEEE)
        if STATS:
            _add_tokens(dq_ptr, bh64, N, tok, qv, dq, dd, D)
        else:
            _accumulate(dq_ptr, dq_ptr, bh64, N, tok, qv, dq, dd, D, DQ_FIRST, False)
        dak += _dot(tl.trans(dg.to(q_t.dtype)), q_t, IEEE) * scale
        dcl -= tl.sum(dg, 0)
        if FINAL:
            dy += _dot(tl.trans(p.to(y_t.dtype)), do_t, IEEE)
    _store_rows(dak_ptr, col, col_ok, dak, dd, D)
    tl.store(dcl_ptr + col, dcl, mask=col_ok)
    if FINAL:
        _store_rows(dy_ptr, col, col_ok, dy, ddv, DV)
