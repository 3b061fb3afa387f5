"""The fused strategy: one program per (batch, head) runs every tile of every step of its head in
turn, in one launch; the intermediates it writes are read back by the same program right away,
from L2. It pays at T = 1 on short sequences with many heads (``plan.py`` chooses)."""

from __future__ import annotations

import triton
import triton.language as tl

from .common import _after_previous_grid, _l_count, _r_count, _seq_blocks
from .stages import _l_out_tile, _l_sum_tile, _pad_rows, _r_tile, _zero_rows
from .variants import _exact_tile, _select_globals


@triton.jit
def _fused_kernel(
    q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, mask_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, L_TILES,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_on, stride_od,
    stride_mb, stride_mn, scale,
    D: tl.constexpr, DV: tl.constexpr, NUM_STEPS: tl.constexpr,
    HAS_MASK: tl.constexpr, R_GROUPED: tl.constexpr, R_ONE_COL: tl.constexpr, L_GROUPED: tl.constexpr,
    L_ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    R_TILE: tl.constexpr, R_COLS: tl.constexpr, L_TILE: tl.constexpr, L_COLS: tl.constexpr,
    S_COLS: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PDL: tl.constexpr,
    ex_l_ptr, ex_y_ptr, gflag_ptr, gsel_ptr, score_ptr, G, EXACT_DIAG: tl.constexpr, GLOBAL: tl.constexpr,
    BG: tl.constexpr,
):
    """``ex_l_ptr`` ... ``BG``: the options' (``variants.py``; the launcher's ``_launch_tiled`` has
    the same order of work)."""
    _after_previous_grid(PDL)
    seq = (len_ptr, off_ptr, tok_ptr)
    dims = (H, N, b, m, seq_len, pad_off)
    sq = (stride_qb, stride_qh, stride_qn, stride_qd)
    sk, sv = (stride_kb, stride_kh, stride_kn, stride_kd), (stride_vb, stride_vh, stride_vn, stride_vd)
    so = (stride_ob, stride_oh, stride_on, stride_od)
    bh = tl.program_id(0)
    mb = _seq_blocks(seq, dims, bh, HAS_MASK)
    var = (ex_l_ptr, ex_y_ptr, gflag_ptr)
    if GLOBAL:
        _select_globals(bh, q_ptr, k_ptr, score_ptr, gsel_ptr, gflag_ptr, seq, dims, sq, sk, G, D, HAS_MASK, BG, BD)
        tl.debug_barrier()
    for step in tl.static_range(NUM_STEPS):
        y_out = y_ptr
        if EXACT_DIAG and step == 0:  # the first R-step's Y is the exact diagonal blocks' value
            y_out = ex_y_ptr
        for t in range(_r_count(mb, b, R_TILE, R_GROUPED)):
            _r_tile(bh, t, q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_out, seq, dims, sq, sk, sv, scale,
                    D, DV, step > 0, step == NUM_STEPS - 1 or (EXACT_DIAG and step == 0), HAS_MASK, R_GROUPED,
                    R_ONE_COL, IEEE, R_TILE, R_COLS, BD, BDV, var, GLOBAL, EXACT_DIAG and step == 0)
        # The whole CTA's global writes are visible to it after a barrier.
        tl.debug_barrier()
        if GLOBAL and step == 0:
            for t in range(_r_count(mb, b, R_TILE, R_GROUPED)):
                _exact_tile(bh, t, q_ptr, k_ptr, v_ptr, ex_l_ptr, ex_y_ptr, gsel_ptr, seq, dims, sq, sk, sv, scale, G,
                            D, DV, EXACT_DIAG, HAS_MASK, R_GROUPED, IEEE, R_TILE, BG, BD, BDV)
            tl.debug_barrier()
        if step < NUM_STEPS - 1:
            for t in range(_l_count(mb, b, S_COLS, L_GROUPED)):
                _l_sum_tile(bh, t, q_ptr, al_ptr, cl_ptr, sum_ptr, seq, dims, sq, scale, D, HAS_MASK, L_GROUPED,
                            L_ONE_COL, IEEE, L_TILE, S_COLS, BD, var, EXACT_DIAG or GLOBAL, EXACT_DIAG)
            tl.debug_barrier()
    if HAS_MASK:
        for t in range(L_TILES):
            _zero_rows(bh, _pad_rows(bh, t, mask_ptr, dims, (stride_mb, stride_mn), L_GROUPED, L_TILE), o_ptr, dims, so,
                       DV, L_TILE, BDV)
    for t in range(_l_count(mb, b, L_TILE, L_GROUPED)):
        _l_out_tile(bh, t, q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, seq, dims, sq, so, scale,
                    D, DV, HAS_MASK, L_GROUPED, L_ONE_COL, IEEE, L_TILE, L_COLS, BD, BDV, var, EXACT_DIAG or GLOBAL,
                    EXACT_DIAG)
