"""The tiled strategy: two launches per step, one program per tile of the batch's grid
(``TILES`` per head); programs past their sequence's own tile count exit at once, so a sequence's
cost follows its own length. (Programs that loop over several tiles were slower: inside a loop the
compiler keeps every loop-invariant index and pointer tile live: more registers per thread.)

Launch arguments are flat (strides ``stride_<tensor><dim>``, dims b = batch, h = head, n = token,
d = feature); each kernel packs them into the tuples ``common.py`` describes."""

from __future__ import annotations

import triton
import triton.language as tl

from .common import _after_previous_grid, _l_count, _r_count, _seq_blocks, _tile_origin
from .layout_kernel import _sequence_layout
from .stages import (
    _l_out_home_tile,
    _l_out_tile,
    _l_sum_tile,
    _pad_rows,
    _r_tile,
    _zero_offset_rows,
    _zero_rows,
)


@triton.jit
def _head_and_tile(TILES):
    """The (batch * head, tile) this program owns: programs are numbered head by head."""
    pid = tl.program_id(0)
    return pid // TILES, pid % TILES


@triton.jit
def _r_step_kernel(
    q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, len_ptr, off_ptr, tok_ptr, mask_ptr,
    H, N, b, m, seq_len, pad_off, TILES,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_mb, stride_mn, scale,
    D: tl.constexpr, DV: tl.constexpr,
    FROM_SUMMARY: tl.constexpr, WANT_Y: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr,
    ONE_COL: tl.constexpr, IEEE: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
    BDV: tl.constexpr, PDL: tl.constexpr, ex_l_ptr, ex_y_ptr, gflag_ptr, GLOBAL: tl.constexpr, LSE_OUT: tl.constexpr,
    o_ptr, spare_ptr, SPARE, stride_ob, stride_oh, stride_on, stride_od, AL_HOME: tl.constexpr = False,
    LAYOUT: tl.constexpr = False, PRE: tl.constexpr = False, LCH: tl.constexpr = 16,
):
    """``ex_l_ptr`` ... ``LSE_OUT``: the options' (``stages._r_tile``). ``o_ptr`` ... ``AL_HOME``: aL
    in the output tensor (``stages._al_rows``; SPARE rows per head at ``spare_ptr``). LAYOUT (the
    first grid of a masked call): each program first lays out its sequence from the mask
    (``layout_kernel.py``), for the slots of its tile's blocks."""
    _after_previous_grid(PDL)
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    bh, t = _head_and_tile(TILES)
    if LAYOUT:
        k0, _, _, G = _tile_origin(t, b, BQ, GROUPED)
        _sequence_layout(mask_ptr, stride_mb, stride_mn, seq, bh // H, N, b, k0 * b, (k0 + G) * b, PRE, LCH)
    if t < _r_count(_seq_blocks(seq, dims, bh, HAS_MASK), b, BQ, GROUPED):
        _r_tile(bh, t, q_ptr, k_ptr, v_ptr, sum_ptr, al_ptr, cl_ptr, y_ptr, seq, dims,
                (stride_qb, stride_qh, stride_qn, stride_qd), (stride_kb, stride_kh, stride_kn, stride_kd),
                (stride_vb, stride_vh, stride_vn, stride_vd), scale,
                D, DV, FROM_SUMMARY, WANT_Y, HAS_MASK, GROUPED, ONE_COL, IEEE, BQ, BK, BD, BDV,
                (ex_l_ptr, ex_y_ptr, gflag_ptr), GLOBAL, LSE_OUT,
                (o_ptr, spare_ptr, SPARE, (stride_ob, stride_oh, stride_on, stride_od)), AL_HOME)


@triton.jit
def _l_out_kernel(
    q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, mask_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, TILES,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_ob, stride_oh, stride_on, stride_od,
    stride_mb, stride_mn, scale,
    D: tl.constexpr, DV: tl.constexpr,
    HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PDL: tl.constexpr,
    ex_l_ptr, ex_y_ptr, EXTRA: tl.constexpr, EXACT_DIAG: tl.constexpr,
    spare_ptr, SPARE, AL_HOME: tl.constexpr = False,
):
    """With a mask, each program also zeroes the output rows of the padding tokens in its tile of
    the batch's grid: their mask is loaded first and the zeros stored last, so that the load's
    latency hides behind the tile's work instead of delaying it. ``ex_l_ptr`` ... ``EXACT_DIAG``:
    the options' (``stages._l_out_tile``). AL_HOME: aL is in the output tensor
    (``stages._l_out_home_tile``; SPARE rows per head at ``spare_ptr``); not GROUPED, program ``t``
    owns offset ``t`` (TILES = b)."""
    _after_previous_grid(PDL)
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    so = (stride_ob, stride_oh, stride_on, stride_od)
    bh, t = _head_and_tile(TILES)
    sq = (stride_qb, stride_qh, stride_qn, stride_qd)
    if AL_HOME and not GROUPED:  # a program per offset (TILES = b): it also zeroes that offset's padding rows
        tiles = tl.where(_seq_blocks(seq, dims, bh, HAS_MASK) > 0, b, 0)
    else:
        if HAS_MASK:
            pad = _pad_rows(bh, t, mask_ptr, dims, (stride_mb, stride_mn), GROUPED, BQ)
        tiles = _l_count(_seq_blocks(seq, dims, bh, HAS_MASK), b, BQ, GROUPED)
    if t < tiles:
        if AL_HOME:
            _l_out_home_tile(bh, t, q_ptr, (o_ptr, spare_ptr, SPARE, so), cl_ptr, y_ptr, seq, dims, sq, scale,
                             D, DV, HAS_MASK, GROUPED, IEEE, BQ, BK, BD, BDV)
        else:
            _l_out_tile(bh, t, q_ptr, al_ptr, cl_ptr, y_ptr, o_ptr, seq, dims, sq, so, scale, D, DV, HAS_MASK,
                        GROUPED, ONE_COL, IEEE, BQ, BK, BD, BDV, (ex_l_ptr, ex_y_ptr), EXTRA, EXACT_DIAG)
    if HAS_MASK:
        if AL_HOME and not GROUPED:
            _zero_offset_rows(bh, t, mask_ptr, o_ptr, dims, (stride_mb, stride_mn), so, DV, BQ, BDV)
        else:
            _zero_rows(bh, pad, o_ptr, dims, so, DV, BQ, BDV)


@triton.jit
def _l_sum_kernel(
    q_ptr, al_ptr, cl_ptr, sum_ptr, len_ptr, off_ptr, tok_ptr,
    H, N, b, m, seq_len, pad_off, TILES,
    stride_qb, stride_qh, stride_qn, stride_qd, scale,
    D: tl.constexpr, HAS_MASK: tl.constexpr, GROUPED: tl.constexpr, ONE_COL: tl.constexpr, IEEE: tl.constexpr,
    BQ: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr, PDL: tl.constexpr,
    ex_l_ptr, EXTRA: tl.constexpr, EXACT_DIAG: tl.constexpr,
):
    """``ex_l_ptr`` ... ``EXACT_DIAG``: the options' (``stages._l_sum_tile``)."""
    _after_previous_grid(PDL)
    seq, dims = (len_ptr, off_ptr, tok_ptr), (H, N, b, m, seq_len, pad_off)
    bh, t = _head_and_tile(TILES)
    if t < _l_count(_seq_blocks(seq, dims, bh, HAS_MASK), b, BK, GROUPED):
        _l_sum_tile(bh, t, q_ptr, al_ptr, cl_ptr, sum_ptr, seq, dims, (stride_qb, stride_qh, stride_qn, stride_qd),
                    scale, D, HAS_MASK, GROUPED, ONE_COL, IEEE, BQ, BK, BD, (ex_l_ptr,), EXTRA, EXACT_DIAG)
