#!/usr/bin/env python
"""Registers, spills and shared memory of the Triton kernels for Hopper (sm_90), compiled on this
machine: no GPU needed.

    python scripts/benchmarks/kernel_resources.py [--warps W] [--mask] N[:T] ...   (default: 4096 16384 16384:2)
    python scripts/benchmarks/kernel_resources.py --every-variant      # compile each kernel variant once

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

# Element types of the launcher's buffers: float32 statistics, int64 layout, a bool mask; every
# other pointer in the input dtype (float16 here).
POINTER_TYPES = {"len_ptr": "*i64", "off_ptr": "*i64", "tok_ptr": "*i64", "mask_ptr": "*i8", "cl_ptr": "*fp32",
                 "ex_l_ptr": "*fp32", "score_ptr": "*fp32", "gflag_ptr": "*i8", "gsel_ptr": "*i64"}
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
    for i, name in enumerate(inspect.signature(kernel.fn).parameters):
        if specialize and UNIT_STRIDE.fullmatch(name):
            constexprs.setdefault(name, 1)
        if name in OPTIONS_OFF:
            constexprs.setdefault(name, OPTIONS_OFF[name])
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


def kernel_configs(N: int, T: int, mask: bool):
    """(name, kernel, constexprs, warps) of each launch of a tiled call at this N."""
    from monarch_convert.kernels.triton.plan import make_plan
    from monarch_convert.kernels.triton.tiled import _l_out_kernel, _l_sum_kernel, _r_step_kernel

    b = math.isqrt(N - 1) + 1
    p = make_plan(12, b, -(-N // b), 64, T, None, True)
    rs, ls, ss = p.r_step, p.l_step, p.s_step
    base = dict(D=64, HAS_MASK=mask, IEEE=False, BD=64, PDL=True)  # every launch but the first waits
    r = dict(base, DV=64, BDV=64, GROUPED=rs.grouped, ONE_COL=rs.one_col, BQ=rs.rows, BK=rs.cols)
    if T > 1:
        yield "R-step (first)", _r_step_kernel, dict(r, FROM_SUMMARY=False, WANT_Y=False, PDL=mask), rs.warps
        yield "L-step (summaries)", _l_sum_kernel, dict(base, GROUPED=ls.grouped, ONE_COL=ls.one_col, BQ=ss.rows,
                                                        BK=ss.cols), ss.warps
    yield "R-step (final)", _r_step_kernel, dict(r, FROM_SUMMARY=T > 1, WANT_Y=True, PDL=mask or T > 1), rs.warps
    yield "L-step (output)", _l_out_kernel, dict(base, DV=64, BDV=64, GROUPED=ls.grouped, ONE_COL=ls.one_col,
                                                BQ=ls.rows, BK=ls.cols), ls.warps


def every_variant():
    """(kernel, constexprs) of every code path the launcher can compile: grouped, one column tile
    and looped programs of each step kind, the first and a later R-step, and the fused kernel."""
    from monarch_convert.kernels.triton.fused import _fused_kernel
    from monarch_convert.kernels.triton.layout_kernel import _layout_kernel
    from monarch_convert.kernels.triton.tiled import _l_out_kernel, _l_sum_kernel, _r_step_kernel

    common = dict(D=72, HAS_MASK=True, IEEE=False, BQ=64, BK=64, BD=128, PDL=True)
    with_v = dict(common, DV=64, BDV=64)
    for grouped, one_col in ((True, True), (False, True), (False, False)):
        # Looped programs may have fewer rows than columns (row tiles below the block size).
        cols = dict(GROUPED=grouped, ONE_COL=one_col, BK=64 if grouped else 128)
        yield _r_step_kernel, dict(with_v, FROM_SUMMARY=True, WANT_Y=True, **cols)
        yield _l_out_kernel, dict(with_v, **cols)
        yield _l_sum_kernel, dict(common, **cols)
    yield _r_step_kernel, dict(with_v, FROM_SUMMARY=False, WANT_Y=False, GROUPED=False, ONE_COL=True, BK=128,
                               PDL=False)
    whole = dict(D=72, DV=64, HAS_MASK=False, R_GROUPED=True, R_ONE_COL=True, L_GROUPED=False, L_ONE_COL=False,
                 IEEE=False, R_TILE=64, R_COLS=64, L_TILE=32, L_COLS=64, S_COLS=32, BD=128, BDV=64, PDL=False)
    yield _fused_kernel, dict(whole, NUM_STEPS=2)
    yield _layout_kernel, dict(PRE=True, CH=1024)
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
    p.add_argument("cases", nargs="*", default=["4096", "16384", "16384:2"], help="N[:T]")
    p.add_argument("--warps", type=int, default=None, help="warps per program (default: the launcher's)")
    p.add_argument("--mask", action="store_true", help="with a key-padding mask")
    p.add_argument("--every-variant", action="store_true", help="compile every kernel variant down to a cubin")
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
        N, T = (int(x) for x in (case.split(":") + ["1"])[:2])
        for name, kernel, constexprs, warps in kernel_configs(N, T, args.mask):
            warps = args.warps or warps
            compiled = compile_sm90(kernel, constexprs, specialize=True, num_warps=warps, num_stages=3)
            print(f"N={N:6d} T={T} {name:19s} {warps} warps, {resources(compiled)}", flush=True)


if __name__ == "__main__":
    main()
