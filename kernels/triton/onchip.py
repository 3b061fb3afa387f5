"""The on-chip strategy, for short sequences: one program per (batch, head) holds its whole head in
registers, as 3D tensors of its ``BM`` blocks by ``BB`` offsets (the padded ``m`` and ``b``, at most
16 x 16: ``plan.onchip_fits``), and runs every step with batched 3D dots. It reads q, k and v, writes
the output and nothing else: no intermediates in memory (``aL, cL, Y`` and the summaries stay on
chip) and one launch at any T, where the fused kernel writes and reads back its intermediates
(docs/benchmarks-log.md, "Short sequences"). With a key-padding mask each program lays out its own
sequence from its mask row: no layout launch either.

The arithmetic is that of ``stages.py`` (the same float32 statistics in base 2, the same roundings
to the input dtype: ``aL`` as ``min(s, 1) * R @ k``, ``Y``, the summaries, the softmax weights before
each dot), on whole heads instead of tiles. Notation of docs/algorithm.md: slot ``p = k*b + j``
(block k, offset j); tensors "by block" are (BM, BB, .) indexed [k, j], "by offset" (BB, BM, .)
indexed [j, l] (or [j, k]).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import LN2, LOG2E, NEG, _cdiv, _dot, _head_base
from .layout_kernel import _mask_extent


@triton.jit
def _sequence(row, stride_mn, N, b, pad_off, HAS_MASK: tl.constexpr, PRE: tl.constexpr, BN: tl.constexpr):
    """(length, pre-padding offset, first real position, whether the real positions are scattered)
    of a sequence: from its mask ``row`` (``kernels/layout.py``'s placement), or every position."""
    if HAS_MASK:
        L, first, last = _mask_extent(row, stride_mn, N, BN)
        if PRE:
            off = _cdiv(L, b) * b - L
        else:
            off = L * 0
        scattered = (last - first + 1 != L) & (L > 0)
    else:
        L = N
        off = pad_off
        first = 0
        scattered = False
    return L, off, first, scattered


@triton.jit
def _scattered_tokens(rank, row, stride_mn, N, CH: tl.constexpr):
    """Input position of the real token of each ``rank`` (a 2D tensor) of a mask row whose real
    tokens are not contiguous: a prefix sum over the row in chunks of CH positions, each matched
    against every rank (``layout_kernel._scatter_ranks`` writes the same to memory)."""
    x = tl.arange(0, CH)
    tok = rank * 0
    seen = tl.sum(x * 0, 0)
    for n0 in range(0, N, CH):
        n = n0 + x
        real = (tl.load(row + n * stride_mn, mask=n < N, other=0) != 0).to(tl.int32)
        at = tl.cumsum(real, 0) - 1 + seen
        hit = (at[None, None, :] == rank[:, :, None]) & (real[None, None, :] != 0)
        tok += tl.sum(tl.where(hit, n[None, None, :], 0), 2)
        seen += tl.sum(real, 0)
    return tok


@triton.jit
def _slot_tokens(slot, inside, seq, row, stride_mn, N, HAS_MASK: tl.constexpr, CH: tl.constexpr):
    """(input position, whether there is a real token) of each slot; ``seq`` from ``_sequence``."""
    L, off, first, scattered = seq
    rank = slot - off
    ok = inside & (rank >= 0) & (rank < L)
    tok = first + rank
    if HAS_MASK:
        if scattered:
            tok = _scattered_tokens(rank, row, stride_mn, N, CH)
    return tok.to(tl.int64), ok


@triton.jit
def _load3(base, tok, ok, stride_n, stride_d, DIM: tl.constexpr, BDIM: tl.constexpr):
    """Rows ``tok`` (a 2D tensor of positions) of one head: (., ., BDIM), zeros where not ``ok``."""
    dd = tl.arange(0, BDIM)
    ptr = base + tok[:, :, None] * stride_n + dd[None, None, :] * stride_d
    return tl.load(ptr, mask=ok[:, :, None] & (dd < DIM)[None, None, :], other=0.0)


@triton.jit
def _r_step(x, kt, kv, scale, IEEE: tl.constexpr):
    """The R-step of every block at once (``stages._r_tile``): rows ``x`` (queries or summaries)
    and keys ``kt`` by block, ``kv`` (BM, BB) the real keys. Returns the unnormalised weights in the
    input dtype, their row sums (1 where there are none), ``aL`` (stored as ``min(s, 1) * R @ k``,
    ``_l_logits`` applies the rest) and ``cL``, by block."""
    keep = kv[:, None, :]
    s = tl.where(keep, _dot(x, tl.trans(kt, (0, 2, 1)), IEEE) * (scale * LOG2E), NEG)
    sc = s - tl.max(s, 2)[:, :, None]
    p = tl.where(keep, tl.exp2(sc), 0.0)
    l_i = tl.sum(p, 2)
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    c_l = LN2 * (tl.sum(p * sc, 2) / l_safe - tl.log2(l_safe))  # sum R log R: 0 log 0 = 0
    pd = p.to(kt.dtype)
    a_l = (_dot(pd, kt, IEEE) * (tl.minimum(scale, 1.0) / l_safe)[:, :, None]).to(kt.dtype)
    return pd, l_safe, a_l, c_l


@triton.jit
def _l_logits(a, b, c_off, scale, IEEE: tl.constexpr):
    """Base-2 L-logits ``q . aL - cL`` of the batched product ``a @ b^T`` (offset-batched), with
    ``cL`` (BB, BM) broadcast by the caller's orientation: the scale above 1 that ``aL`` leaves out
    applied to the float32 dot (``stages._l_scores``)."""
    return _dot(a, tl.trans(b, (0, 2, 1)), IEEE) * (tl.maximum(scale, 1.0) * LOG2E) - c_off * LOG2E


@triton.jit
def _l_out(q_off, a_off, c_off, y_off, block_ok, scale, IEEE: tl.constexpr):
    """The final L-step and the output (``stages._l_out_tile``): each query (j, l) by offset, its
    softmax over the real blocks k of its offset, ``Z = L @ Y``: (BB, BM, BDV) float32."""
    keep = block_ok[None, None, :]
    s = tl.where(keep, _l_logits(q_off, a_off, c_off[:, None, :], scale, IEEE), NEG)
    p = tl.where(keep, tl.exp2(s - tl.max(s, 2)[:, :, None]), 0.0)
    l_i = tl.sum(p, 2)
    return _dot(p.to(y_off.dtype), y_off, IEEE) / tl.where(l_i > 0, l_i, 1.0)[:, :, None]


@triton.jit
def _summaries(q_off, a_off, c_off, block_ok, query_ok, scale, IEEE: tl.constexpr):
    """A non-final L-step (``stages._l_sum_tile``): the next R-step's rows ``aR / cR`` by offset
    (BB, BM, BD), [j, k]. Logits transposed, (j, block k, query l), so that the weights are the first
    operand of the sum over the queries; padding queries weigh nothing, and ``cR = 0`` gives a zero
    summary (a uniform R row)."""
    keep = block_ok[None, :, None]
    s = tl.where(keep, _l_logits(a_off, q_off, c_off[:, :, None], scale, IEEE), NEG)
    p = tl.where(keep, tl.exp2(s - tl.max(s, 1)[:, None, :]), 0.0)
    l_i = tl.sum(p, 1)
    p = tl.where(query_ok[:, None, :], p / tl.where(l_i > 0, l_i, 1.0)[:, None, :], 0.0)
    a_r = _dot(p.to(q_off.dtype), q_off, IEEE)
    c_r = tl.sum(p, 2)
    return (a_r / tl.where(c_r > 0, c_r, 1.0)[:, :, None]).to(q_off.dtype)


@triton.jit
def _zero_padding(obase, row, stride_mn, so_n, so_d, N, DV: tl.constexpr, BN: tl.constexpr, BDV: tl.constexpr):
    """Zero the output rows of the padding tokens of one head (no slot holds them)."""
    n = tl.arange(0, BN)
    ddv = tl.arange(0, BDV)
    real = tl.load(row + n * stride_mn, mask=n < N, other=1)
    pad = (n < N) & (real == 0)
    zeros = tl.zeros([BN, BDV], tl.float32).to(obase.dtype.element_ty)
    tl.store(obase + n[:, None].to(tl.int64) * so_n + ddv[None, :] * so_d, zeros,
             mask=pad[:, None] & (ddv < DV)[None, :])


@triton.jit
def _onchip_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, mask_ptr, H, N, b, m, pad_off,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_on, stride_od,
    stride_mb, stride_mn, scale,
    D: tl.constexpr, DV: tl.constexpr, NUM_STEPS: tl.constexpr, HAS_MASK: tl.constexpr, PRE: tl.constexpr,
    IEEE: tl.constexpr, BM: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, BN: tl.constexpr,
):
    """One program per (batch, head): every step of its head. q is loaded by block for the first
    R-step and again by offset for each L-step (from cache) rather than kept and permuted; k is
    loaded again by each R-step: fewer registers live across the steps."""
    bh = tl.program_id(0)
    bi, hi = bh // H, bh % H
    row = mask_ptr + bi.to(tl.int64) * stride_mb
    seq = _sequence(row, stride_mn, N, b, pad_off, HAS_MASK, PRE, BN)
    kb, jb = tl.arange(0, BM)[:, None], tl.arange(0, BB)[None, :]
    tok_b, ok_b = _slot_tokens(kb * b + jb, (kb < m) & (jb < b), seq, row, stride_mn, N, HAS_MASK, 16)
    tok_o, ok_o = tl.trans(tok_b), tl.trans(ok_b)
    block_ok = tl.arange(0, BM) < _cdiv(seq[0], b)  # blocks with a real key (below m_s)
    qbase = _head_base(q_ptr, (stride_qb, stride_qh), bi, hi)
    kbase = _head_base(k_ptr, (stride_kb, stride_kh), bi, hi)
    x = _load3(qbase, tok_b, ok_b, stride_qn, stride_qd, D, BD)
    for step in tl.static_range(NUM_STEPS):
        kt = _load3(kbase, tok_b, ok_b, stride_kn, stride_kd, D, BD)
        pd, l_safe, a_l, c_l = _r_step(x, kt, ok_b, scale, IEEE)
        a_off, c_off = tl.trans(a_l, (1, 0, 2)), tl.trans(c_l)
        q_off = _load3(qbase, tok_o, ok_o, stride_qn, stride_qd, D, BD)
        if step < NUM_STEPS - 1:
            x = tl.trans(_summaries(q_off, a_off, c_off, block_ok, ok_o, scale, IEEE), (1, 0, 2))
    vt = _load3(_head_base(v_ptr, (stride_vb, stride_vh), bi, hi), tok_b, ok_b, stride_vn, stride_vd, DV, BDV)
    y = (_dot(pd, vt, IEEE) / l_safe[:, :, None]).to(vt.dtype)
    z = _l_out(q_off, a_off, c_off, tl.trans(y, (1, 0, 2)), block_ok, scale, IEEE)
    obase = _head_base(o_ptr, (stride_ob, stride_oh), bi, hi)
    ddv = tl.arange(0, BDV)
    tl.store(obase + tok_o[:, :, None] * stride_on + ddv[None, None, :] * stride_od, z.to(o_ptr.dtype.element_ty),
             mask=ok_o[:, :, None] & (ddv < DV)[None, None, :])
    if HAS_MASK:
        _zero_padding(obase, row, stride_mn, stride_on, stride_od, N, DV, BN, BDV)
