#!/usr/bin/env python
"""Registers, spills and shared memory of the Triton kernels for Hopper (sm_90), compiled on this
machine: no GPU needed.

    python scripts/benchmarks/kernel_resources.py [--warps W] [--mask] N[:T] ...   (default: 4096 16384 16384:2)
    python scripts/benchmarks/kernel_resources.py --onchip [--warps W] [--mask] 256 256:2   # N' <= 256
    python scripts/benchmarks/kernel_resources.py --mask --maxnreg 0 4096   # no register cap (Knobs(maxnreg=0))
    python scripts/benchmarks/kernel_resources.py --al-home off 2048   # aL in the scratch (Knobs(al_home=False))
    python scripts/benchmarks/kernel_resources.py --every-variant      # compile each kernel variant once
    python scripts/benchmarks/kernel_resources.py --backward [N[:T[:b]] ...]  # the backward's kernels
    python scripts/benchmarks/kernel_resources.py --backward --rows 32 --warps 16 --stages 1 4096
        # other row chunks / warps / pipeline stages (what bench_backward_tiles.py times)

Each N is a sequence length (head dim 64, float16, b = ceil(sqrt(N)), the launcher's tiles).
Strides are specialised the way Triton's JIT does on a launch (a unit stride becomes a constant,
the others are multiples of 16), so the numbers are those of a real launch. They depend on the
Triton version (its ptxas): install the GPU machine's version to predict that machine (with
triton 3.6 the R-step at N = 4096 reported 112 registers here and 117 at run time on an H100).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import subprocess
import sys
import tempfile
from typing import Optional

# Element types of the launcher's buffers: float32 statistics, int64 layout, a bool mask; every
# other pointer in the input dtype (float16 here).
POINTER_TYPES = {"len_ptr": "*i64", "off_ptr": "*i64", "tok_ptr": "*i64", "mask_ptr": "*i8", "cl_ptr": "*fp32",
                 "ex_l_ptr": "*fp32", "score_ptr": "*fp32", "gflag_ptr": "*i8", "gsel_ptr": "*i64",
                 **{f"{x}_ptr": "*fp32" for x in ("cr", "dak", "dcl", "dy", "ds", "dq", "dk", "dv", "src_a", "src_b")}}
# The op's options (docs/algorithm.md, section 7) where a configuration does not name them: off.
OPTIONS_OFF = {"GLOBAL": False, "LSE_OUT": False, "EXTRA": False, "EXACT_DIAG": False, "BG": 16}
UNIT_STRIDE = re.compile(r"stride_[qkvo]d|stride_mn")
ALIGNED = re.compile(r"stride_[qkvom][bhn]|H|N")


def compile_sm90(kernel, constexprs: dict, specialize: bool = False, **options):
    """Compile ``kernel`` for sm_90 with ``constexprs``; every other integer is an i32 argument.
    ``specialize``: unit strides as constants and pointers, strides and sizes divisible by 16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs, signature, attrs = dict(constexprs), {}, {}
    for i, (name, param) in enumerate(inspect.signature(kernel.fn).parameters.items()):
        if specialize and UNIT_STRIDE.fullmatch(name):
            constexprs.setdefault(name, 1)
        if name in OPTIONS_OFF:
            constexprs.setdefault(name, OPTIONS_OFF[name])
        if "constexpr" in str(param.annotation) and param.default is not inspect.Parameter.empty:
            constexprs.setdefault(name, param.default)  # a flag left at its default
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if name.endswith("_ptr"):
            signature[name] = POINTER_TYPES.get(name, "*fp16")
        else:
            signature[name] = "fp32" if name == "scale" else "i32"
        if specialize and (name.endswith("_ptr") or ALIGNED.fullmatch(name)):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def resources(compiled) -> str:
    import triton

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs, stack = re.search(r"REG:(\d+) STACK:(\d+)", out).groups()
    return f"{regs} registers, {stack} B stack (spills), {compiled.metadata.shared} B shared"


def onchip_config(N: int, T: int, mask: bool):
    """(name, kernel, constexprs, warps) of the on-chip kernel's launch at this N (at most 256)."""
    from monarch_convert.kernels.triton.onchip import _onchip_kernel
    from monarch_convert.kernels.triton.plan import Knobs, make_plan, pow2

    b = math.isqrt(N - 1) + 1
    m = -(-N // b)
    p = make_plan(12, b, m, 64, T, 132, False, Knobs(mode="onchip"), plain=True)
    assert p.mode == "onchip", f"N = {N}: no on-chip kernel"
    yield "on-chip", _onchip_kernel, dict(D=64, DV=64, NUM_STEPS=T, HAS_MASK=mask, PRE=False, IEEE=False,
                                          BM=max(16, pow2(m)), BB=max(16, pow2(b)), BD=64, BDV=64,
                                          BN=max(16, pow2(N))), p.fused_warps


def kernel_configs(N: int, T: int, mask: bool, al_home: Optional[bool] = None):
    """(name, kernel, constexprs, warps, None, register cap or None) of each launch of a tiled call at
    this N. ``al_home``: ``Knobs(al_home=...)`` (None: the launcher's choice)."""
    from monarch_convert.kernels.triton.plan import Knobs, make_plan
    from monarch_convert.kernels.triton.tiled import _l_out_kernel, _l_sum_kernel, _r_step_kernel

    b = math.isqrt(N - 1) + 1
    p = make_plan(12, b, -(-N // b), 64, T, None, True, Knobs(al_home=al_home), plain=True)
    rs, ls, ss = p.r_step, p.l_step, p.s_step
    home = dict(AL_HOME=p.al_home)  # T = 1: aL in the output tensor
    base = dict(D=64, HAS_MASK=mask, IEEE=False, BD=64, PDL=True)  # every launch but the first waits
    r = dict(base, DV=64, BDV=64, GROUPED=rs.grouped, ONE_COL=rs.one_col, BQ=rs.rows, BK=rs.cols)
    if T > 1:
        yield "R-step (first)", _r_step_kernel, dict(r, FROM_SUMMARY=False, WANT_Y=False, PDL=False, LAYOUT=mask,
                                                     LCH=min(2048, N)), rs.warps, None, rs.maxnreg
        yield "L-step (summaries)", _l_sum_kernel, dict(base, GROUPED=ls.grouped, ONE_COL=ls.one_col, BQ=ss.rows,
                                                        BK=ss.cols), ss.warps, None, ss.maxnreg
    yield "R-step (final)", _r_step_kernel, dict(r, FROM_SUMMARY=T > 1, WANT_Y=True, PDL=T > 1, LAYOUT=mask and T == 1,
                                                 LCH=min(2048, N), **home), rs.warps, None, rs.maxnreg
    yield "L-step (output)", _l_out_kernel, dict(base, DV=64, BDV=64, GROUPED=ls.grouped, ONE_COL=ls.one_col,
                                                BQ=ls.rows, BK=ls.cols, **home), ls.warps, None, ls.maxnreg


def backward_configs(N: int, T: int, mask: bool, block: Optional[int] = None, rows: Optional[int] = None):
    """(name, kernel, constexprs, warps, stages or None) of each kind of launch of a backward call at this N and
    block size (default ceil(sqrt(N))), as ``kernels/triton/backward_launch.py`` makes them: the
    recomputation, then the walk back (at T = 1 also the output stage's reading the training
    forward's kept intermediates); with more than 128 blocks, the L-programs' STATS variants,
    and with blocks longer than 128 keys, the R-programs over key tiles; the zeroing launch (a mask,
    STATS's or key tiles' accumulators) and the casting one (key tiles). ``rows``: row chunks of that
    many rows in place of ``tile``'s."""
    from monarch_convert.kernels.triton import backward as bw
    from monarch_convert.kernels.triton import backward_wide
    from monarch_convert.kernels.triton.backward_launch import MAX_TILE, tile

    b = block or math.isqrt(N - 1) + 1
    m = -(-N // b)
    (BB, r_rows, r_warps, _), (BM, l_rows, l_warps, _) = tile(min(b, MAX_TILE), 64), tile(min(m, MAX_TILE), 64)
    # The backward programs' own choices (float16 inputs), as the launcher makes them.
    _, rb_rows, rb_warps, rb_stages = tile(min(b, MAX_TILE), 64, "_r_bwd" + ("_wide" if b > MAX_TILE else ""), True)
    _, lb_rows, lb_warps, lb_stages = tile(min(m, MAX_TILE), 64, "_l_bwd", True)
    r_fwd, r_bwd = (backward_wide._r_fwd_wide_kernel, backward_wide._r_bwd_wide_kernel) if b > MAX_TILE else (
        bw._r_fwd_kernel, bw._r_bwd_kernel)
    base = dict(D=64, HAS_MASK=mask, IEEE=False, BD=64)
    stats = m > MAX_TILE
    if rows:
        r_rows, l_rows, rb_rows, lb_rows = min(rows, BB), min(rows, BM), min(rows, BB), min(rows, BM)
    r, lo = dict(base, DV=64, BDV=64, BB=BB, BQ=r_rows), dict(base, BM=BM, BQ=l_rows, STATS=stats)
    lb = dict(lo, DV=64, BDV=64, BQ=lb_rows)
    wide = dict(base, DV=64, BDV=64, BM=BM, BQ=l_rows)
    for first in (True, False)[:T]:
        last = first == (T == 1)
        kind = dict(r, FROM_SUMMARY=not first, WANT_Y=last)
        yield f"R-step {'first' if first else 'last'}", r_fwd, kind, r_warps, None
        yield (f"R backward {'first' if first else 'last'}", r_bwd,
               dict(kind, BQ=rb_rows, DK_FIRST=last, DK_LAST=first), rb_warps, rb_stages)
    if T > 1:
        if stats:
            yield "L stats (summaries)", bw._l_stats_kernel, dict(wide, WANT_DELTA=False, FINAL=False), l_warps, None
        yield "L-step (summaries)", bw._l_fwd_kernel, lo, l_warps, None
        yield ("L backward (summaries)", bw._l_bwd_kernel, dict(lb, FINAL=False, DQ_FIRST=False), lb_warps,
               lb_stages)
    # At T = 1 a training call reads the forward's kept aL, cL, Y (SAVED); a call without them recomputes.
    for saved in (False, True)[:2 if T == 1 else 1]:
        kept = ", kept forward" if saved else ""
        if stats:
            yield f"L stats (output{kept})", bw._l_stats_kernel, dict(wide, WANT_DELTA=True, FINAL=True,
                                                                       SAVED=saved), l_warps, None
        yield (f"L backward (output{kept})", bw._l_bwd_kernel, dict(lb, FINAL=True, DQ_FIRST=True, SAVED=saved),
               lb_warps, lb_stages)
    if mask or stats or b > MAX_TILE:
        yield "zero", bw._zero_kernel, dict(BLOCK=4096), 4, None
    if b > MAX_TILE:
        yield "cast", bw._cast_kernel, dict(BLOCK=4096), 4, None


def every_variant():
    """(kernel, constexprs) of every code path the launcher can compile: grouped, one column tile
    and looped programs of each step kind, the first and a later R-step, aL in the output tensor, the
    fused and the on-chip kernel; then the same with the op's options on (not the on-chip kernel's: it runs without)."""
    from monarch_convert.kernels.triton.fused import _fused_kernel
    from monarch_convert.kernels.triton.layout_kernel import _layout_kernel
    from monarch_convert.kernels.triton.onchip import _onchip_kernel
    from monarch_convert.kernels.triton.tiled import _l_out_kernel, _l_sum_kernel, _r_step_kernel

    common = dict(D=72, HAS_MASK=True, IEEE=False, BQ=64, BK=64, BD=128, PDL=True)
    with_v = dict(common, DV=64, BDV=64)
    for grouped, one_col in ((True, True), (False, True), (False, False)):
        # Looped programs may have fewer rows than columns (row tiles below the block size).
        cols = dict(GROUPED=grouped, ONE_COL=one_col, BK=64 if grouped else 128)
        yield _r_step_kernel, dict(with_v, FROM_SUMMARY=True, WANT_Y=True, **cols)
        yield _l_out_kernel, dict(with_v, **cols)
        yield _l_sum_kernel, dict(common, **cols)
    # The first grid of a masked call: it lays out the sequences first.
    yield _r_step_kernel, dict(with_v, FROM_SUMMARY=False, WANT_Y=False, GROUPED=False, ONE_COL=True, BK=128,
                               PDL=False, LAYOUT=True, PRE=True, LCH=1024)
    # aL in the output tensor (T = 1 inference): the R-step's store, the L-step grouped and per offset.
    yield _r_step_kernel, dict(with_v, FROM_SUMMARY=False, WANT_Y=True, GROUPED=False, ONE_COL=True, BK=128,
                               AL_HOME=True)
    for grouped in (True, False):
        yield _l_out_kernel, dict(with_v, GROUPED=grouped, ONE_COL=True, BK=64 if grouped else 128, AL_HOME=True)
    whole = dict(D=72, DV=64, HAS_MASK=False, R_GROUPED=True, R_ONE_COL=True, L_GROUPED=False, L_ONE_COL=False,
                 IEEE=False, R_TILE=64, R_COLS=64, L_TILE=32, L_COLS=64, S_COLS=32, BD=128, BDV=64, PDL=False)
    yield _fused_kernel, dict(whole, NUM_STEPS=2)
    yield _layout_kernel, dict(PRE=True, CH=1024)
    # The on-chip kernel: a head dim below its padding, a mask (its own layout, scattered tokens).
    yield _onchip_kernel, dict(D=40, DV=64, NUM_STEPS=2, HAS_MASK=True, PRE=True, IEEE=False, BM=16, BB=16, BD=64,
                               BDV=64, BN=256)
    yield from _option_variants(common, with_v, whole)


def _option_variants(common: dict, with_v: dict, whole: dict):
    """The kernels with the op's options on (docs/algorithm.md, section 7): exact diagonal blocks
    and global keys, in the looped programs (the grouped ones take the same branches)."""
    from monarch_convert.kernels.triton.fused import _fused_kernel
    from monarch_convert.kernels.triton.tiled import _l_out_kernel, _l_sum_kernel, _r_step_kernel
    from monarch_convert.kernels.triton.variants import _exact_kernel, _select_kernel

    looped = dict(GROUPED=False, ONE_COL=False, BK=128)
    yield _r_step_kernel, dict(with_v, FROM_SUMMARY=False, WANT_Y=True, GLOBAL=True, LSE_OUT=True, **looped)
    yield _l_out_kernel, dict(with_v, EXTRA=True, EXACT_DIAG=True, **looped)
    yield _l_sum_kernel, dict(common, EXTRA=True, EXACT_DIAG=True, **looped)
    yield _l_sum_kernel, dict(common, EXTRA=True, EXACT_DIAG=False, GROUPED=True, ONE_COL=True)
    yield _select_kernel, dict(D=72, HAS_MASK=True, BG=16, BD=128, PDL=True)
    exact = {name: x for name, x in with_v.items() if name != "BK"}
    yield _exact_kernel, dict(exact, MERGE_DIAG=True, GROUPED=False, BG=16)
    yield _fused_kernel, dict(whole, NUM_STEPS=2, EXACT_DIAG=True, GLOBAL=True, BG=16)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", default=["4096", "16384", "16384:2"], help="N[:T[:b]] (b: --backward only)")
    p.add_argument("--warps", type=int, default=None, help="warps per program (default: the launcher's)")
    p.add_argument("--mask", action="store_true", help="with a key-padding mask")
    p.add_argument("--rows", type=int, default=None, help="--backward: rows per chunk (default: the launcher's)")
    p.add_argument("--stages", type=int, default=None,
                   help="software-pipelining stages (default: the launcher's for the backward programs that choose "
                        "them, else 3, Triton's)")
    p.add_argument("--maxnreg", type=int, default=None,
                   help="cap on registers per thread (Triton's maxnreg launch option: ptxas spills above it; "
                        "default: the launcher's, plan._register_cap; 0: none)")
    p.add_argument("--every-variant", action="store_true", help="compile every kernel variant down to a cubin")
    p.add_argument("--backward", action="store_true", help="the backward's kernels instead of the forward's")
    p.add_argument("--onchip", action="store_true", help="the on-chip kernel (N <= 256) instead of the tiled ones")
    p.add_argument("--al-home", choices=("on", "off"), default=None,
                   help="aL in the output tensor or in the scratch (Knobs(al_home=...); default: the launcher's)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: this compiles the kernels")
    import triton

    if args.every_variant:
        for kernel, constexprs in every_variant():
            assert compile_sm90(kernel, constexprs).asm["cubin"], kernel.fn.__name__
            print("compiled", kernel.fn.__name__, flush=True)
        return

    print(f"triton {triton.__version__}, sm_90, mask={args.mask}")
    for case in args.cases:
        parts = [int(x) for x in case.split(":")]
        N, T, b = parts[0], (parts[1:] or [1])[0], (parts[2:] or [0])[0]
        configs = (backward_configs(N, T, args.mask, b or None, args.rows) if args.backward
                   else onchip_config(N, T, args.mask) if args.onchip
                   else kernel_configs(N, T, args.mask, None if args.al_home is None else args.al_home == "on"))
        for name, kernel, constexprs, warps, *chosen in configs:
            warps, stages = args.warps or warps, args.stages or (chosen and chosen[0]) or 3
            cap = args.maxnreg if args.maxnreg is not None else (chosen[1:] or [None])[0]
            capped = {"maxnreg": cap} if cap else {}
            compiled = compile_sm90(kernel, constexprs, specialize=True, num_warps=warps, num_stages=stages, **capped)
            print(f"N={N:6d} T={T} {name:19s} {warps} warps, {stages} stages, BQ={constexprs.get('BQ', '-')}, "
                  f"cap {cap or '-'}, {resources(compiled)}", flush=True)


if __name__ == "__main__":
    main()
