"""R-programs of the backward for blocks longer than one tile (``pow2(b)`` above the launcher's
``MAX_TILE``: b = ceil(sqrt(N)) beyond N = 16384). Same work as ``_r_fwd_kernel`` and
``_r_bwd_kernel`` of ``backward.py`` (docs/algorithm.md, section 9), with the block's keys in
tiles of BB: each chunk of rows first runs over the key tiles for its statistics (online, as the
forward's R-step), then (backward) once more for the gradients. A program still owns its block,
so its rows' results stay in registers; its keys' gradients are added per key tile, atomically
(successive row chunks of the program add to the same keys).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .backward import _accumulate, _add_tokens, _block_tokens, _dot, _r_rows, _rows, _store_rows
from .common import NEG, _head_sequence


@triton.jit
def _key_tile(k_ptr, v_ptr, sk, sv, bi, hi, kb, i, off, L, seq, dims, dd, ddv, D: tl.constexpr, DV: tl.constexpr,
              WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr):
    """Keys (and, WANT_Y, values; zeros otherwise) of slots ``i`` of block ``kb``: (k, v, token, real)."""
    k_t, tok, kv = _block_tokens(k_ptr, sk, bi, hi, kb, i, off, L, seq, dims, dd, D, HAS_MASK)
    if WANT_Y:
        v_t, _v_tok, _v_ok = _block_tokens(v_ptr, sv, bi, hi, kb, i, off, L, seq, dims, ddv, DV, HAS_MASK)
    else:
        v_t = tl.zeros([i.shape[0], ddv.shape[0]], k_t.dtype)
    return k_t, v_t, tok, kv


@triton.jit
def _scores(s_t, k_t, kv, dak, dy, v_t, scale, WANT_Y: tl.constexpr, IEEE: tl.constexpr):
    """A key tile's logits ``x`` (NEG at padding keys) and ``dR`` without its ``dcL`` term."""
    x = tl.where(kv[None, :], _dot(s_t, tl.trans(k_t), IEEE) * scale, NEG)
    drp = _dot(dak.to(k_t.dtype), tl.trans(k_t), IEEE)
    if WANT_Y:
        drp += _dot(dy.to(v_t.dtype), tl.trans(v_t), IEEE)
    return x, drp


@triton.jit
def _online(mx, den, w, x, kv):
    """One key tile into the rows' running max, normaliser and ``sum p (x - max)`` (for cL),
    rescaled to the new max; also returns the tile's ``p`` and the rescaling factor."""
    m_new = tl.maximum(mx, tl.max(x, 1))
    alpha = tl.exp(mx - m_new)
    sc = x - m_new[:, None]
    p = tl.where(kv[None, :], tl.exp(sc), 0.0)
    w = alpha * (w + (mx - m_new) * den) + tl.sum(p * tl.where(kv[None, :], sc, 0.0), 1)
    return m_new, den * alpha + tl.sum(p, 1), w, p, alpha


@triton.jit
def _r_fwd_wide_kernel(
    src_ptr, k_ptr, v_ptr, ak_ptr, cl_ptr, y_ptr, len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, scale,
    D: tl.constexpr, DV: tl.constexpr, FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr,
    IEEE: tl.constexpr, BB: tl.constexpr, BQ: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
):
    """``_r_fwd_kernel`` over key tiles: ``aK, cL`` (and ``Y``) accumulated online."""
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    sq, sk = (stride_qb, stride_qh, stride_qn, stride_qd), (stride_kb, stride_kh, stride_kn, stride_kd)
    sv = (stride_vb, stride_vh, stride_vn, stride_vd)
    pid = tl.program_id(0)
    bh, kb = pid // m, pid % m
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    bh64 = bh.to(tl.int64)
    dd, ddv, r, c = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BQ), tl.arange(0, BB)
    for j0 in range(0, tl.where(kb < mb, b, 0), BQ):
        row_in = j0 + r < b
        s_t, _tok, _ok = _r_rows(src_ptr, sq, bh64, bi, hi, kb, j0 + r, row_in, off, L, seq, dims, dd, D,
                                 FROM_SUMMARY, HAS_MASK)
        mx = tl.full([BQ], NEG, tl.float32)
        den = tl.zeros([BQ], tl.float32)
        w = tl.zeros([BQ], tl.float32)
        acc_k = tl.zeros([BQ, BD], tl.float32)
        acc_v = tl.zeros([BQ, BDV], tl.float32)
        for c0 in range(0, b, BB):
            k_t, v_t, _k_tok, kv = _key_tile(k_ptr, v_ptr, sk, sv, bi, hi, kb, c0 + c, off, L, seq, dims, dd, ddv,
                                             D, DV, WANT_Y, HAS_MASK)
            x = tl.where(kv[None, :], _dot(s_t, tl.trans(k_t), IEEE) * scale, NEG)
            mx, den, w, p, alpha = _online(mx, den, w, x, kv)
            acc_k = acc_k * alpha[:, None] + _dot(p.to(k_t.dtype), k_t, IEEE)
            if WANT_Y:
                acc_v = acc_v * alpha[:, None] + _dot(p.to(v_t.dtype), v_t, IEEE)
        den = tl.where(den > 0, den, 1.0)
        row = (bh64 * m + kb) * b + j0 + r
        _store_rows(ak_ptr, row, row_in, acc_k / den[:, None], dd, D)
        tl.store(cl_ptr + row, w / den - tl.log(den), mask=row_in)
        if WANT_Y:
            _store_rows(y_ptr, row, row_in, acc_v / den[:, None], ddv, DV)


@triton.jit
def _r_bwd_wide_kernel(
    src_ptr, k_ptr, v_ptr, dak_ptr, dcl_ptr, dy_ptr, ds_ptr, dq_ptr, dk_ptr, dv_ptr, dqo_ptr, dko_ptr, dvo_ptr,
    len_ptr, off_ptr, tok_ptr, H, N, b, m, seq_len, pad_off,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, scale,
    D: tl.constexpr, DV: tl.constexpr, FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr,
    IEEE: tl.constexpr, BB: tl.constexpr, BQ: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    DK_FIRST: tl.constexpr, DK_LAST: tl.constexpr,
):
    """``_r_bwd_kernel`` over key tiles: per chunk of rows, a pass for ``lse``, ``cL`` and
    ``Delta``, then one for the gradients. The keys' gradients go atomically to the zeroed float32
    accumulators ``dk``, ``dv`` (cast to the outputs by the launcher's last launch): DK_FIRST and
    DK_LAST are unused; dq as ``_r_bwd_kernel``."""
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    sq, sk = (stride_qb, stride_qh, stride_qn, stride_qd), (stride_kb, stride_kh, stride_kn, stride_kd)
    sv = (stride_vb, stride_vh, stride_vn, stride_vd)
    pid = tl.program_id(0)
    bh, kb = pid // m, pid % m
    bi, hi, L, off, mb = _head_sequence(bh, seq, dims, HAS_MASK)
    bh64 = bh.to(tl.int64)
    dd, ddv, r, c = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BQ), tl.arange(0, BB)
    for j0 in range(0, tl.where(kb < mb, b, 0), BQ):
        row_in = j0 + r < b
        s_t, tok, ok = _r_rows(src_ptr, sq, bh64, bi, hi, kb, j0 + r, row_in, off, L, seq, dims, dd, D,
                               FROM_SUMMARY, HAS_MASK)
        row = (bh64 * m + kb) * b + j0 + r
        dak = _rows(dak_ptr, row, row_in, dd, D)
        dcl = tl.load(dcl_ptr + row, mask=row_in, other=0.0)
        dy = _rows(dy_ptr, row, row_in, ddv, DV)  # read only at the last step (WANT_Y)
        mx = tl.full([BQ], NEG, tl.float32)
        den = tl.zeros([BQ], tl.float32)
        w = tl.zeros([BQ], tl.float32)
        acc = tl.zeros([BQ], tl.float32)
        for c0 in range(0, b, BB):
            k_t, v_t, _k_tok, kv = _key_tile(k_ptr, v_ptr, sk, sv, bi, hi, kb, c0 + c, off, L, seq, dims, dd, ddv,
                                             D, DV, WANT_Y, HAS_MASK)
            x, drp = _scores(s_t, k_t, kv, dak, dy, v_t, scale, WANT_Y, IEEE)
            mx, den, w, p, alpha = _online(mx, den, w, x, kv)
            acc = acc * alpha + tl.sum(p * drp, 1)  # Delta = sum_i R_i dR_i, unnormalised
        den = tl.where(den > 0, den, 1.0)
        lse, c_l, delta = mx + tl.log(den), w / den - tl.log(den), acc / den
        d_s = tl.zeros([BQ, BD], tl.float32)
        for c0 in range(0, b, BB):
            k_t, v_t, k_tok, kv = _key_tile(k_ptr, v_ptr, sk, sv, bi, hi, kb, c0 + c, off, L, seq, dims, dd, ddv,
                                            D, DV, WANT_Y, HAS_MASK)
            x, drp = _scores(s_t, k_t, kv, dak, dy, v_t, scale, WANT_Y, IEEE)
            log_r = tl.where(kv[None, :], x - lse[:, None], 0.0)
            rp = tl.where(kv[None, :], tl.exp(log_r), 0.0)
            dx = (rp * (drp + dcl[:, None] * (log_r - c_l[:, None]) - delta[:, None])).to(k_t.dtype)
            d_s += _dot(dx, k_t, IEEE) * scale
            dk = _dot(tl.trans(dx), s_t, IEEE) * scale + _dot(tl.trans(rp.to(k_t.dtype)), dak.to(k_t.dtype), IEEE)
            _add_tokens(dk_ptr, bh64, N, k_tok, kv, dk, dd, D)
            if WANT_Y:
                dv = _dot(tl.trans(rp.to(v_t.dtype)), dy.to(v_t.dtype), IEEE)
                _add_tokens(dv_ptr, bh64, N, k_tok, kv, dv, ddv, DV)
        if FROM_SUMMARY:
            _store_rows(ds_ptr, row, row_in, d_s, dd, D)
        else:
            _accumulate(dq_ptr, dqo_ptr, bh64, N, tok, ok, d_s, dd, D, False, True)
