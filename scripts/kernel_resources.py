#!/usr/bin/env python
"""Registers, spills and shared memory of the Triton kernels for Hopper (sm_90), compiled on this
machine: no GPU needed.

    python scripts/kernel_resources.py [--warps W] [--mask] N[:T] ...      (default: 4096 16384 16384:2)

Each N is a sequence length (head dim 64, float16, b = ceil(sqrt(N)), the launcher's default
tiles). Strides are specialised the way Triton's JIT does on a launch (a unit stride becomes a
constant, the others are multiples of 16), so the numbers are those of a real launch. They depend
on the Triton version (its ptxas): install the GPU machine's version to predict that machine
(``pip install triton==3.6.0`` in a separate environment; with triton 3.6, the R-step at N = 4096
reported 112 registers here and 117 at run time on the H100).
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
POINTER_TYPES = {"len_ptr": "*i64", "off_ptr": "*i64", "tok_ptr": "*i64", "mask_ptr": "*i8", "cl_ptr": "*fp32"}
UNIT_STRIDES = ("sqd", "skd", "svd", "sod", "smn")


def compile_sm90(kernel, constexprs: dict, specialize: bool = False, **options):
    """Compile ``kernel`` for sm_90 with ``constexprs``; every other integer is an i32 argument.
    ``specialize``: unit strides as constants and pointers, strides and sizes divisible by 16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs, signature, attrs = dict(constexprs), {}, {}
    for i, name in enumerate(inspect.signature(kernel.fn).parameters):
        if specialize and name in UNIT_STRIDES:
            constexprs.setdefault(name, 1)
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if name.endswith("_ptr"):
            signature[name] = POINTER_TYPES.get(name, "*fp16")
        else:
            signature[name] = "fp32" if name == "scale" else "i32"
        if specialize and (name.endswith("_ptr") or re.fullmatch(r"s[qkvom][bhn]", name) or name in ("H", "N")):
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
    """(name, kernel, constexprs, warps) of each launch the launcher makes for this case (tiles mode)."""
    import monarch_convert.kernels.triton_monarch as tm

    b = math.isqrt(N - 1) + 1
    p = tm._plan(b, -(-N // b), 64, {})
    base = dict(D=64, HAS_MASK=mask, IEEE=False, BD=64, PDL=True)  # every launch but the first waits
    r = dict(base, DV=64, BDV=64, GROUPED=p.r_grouped, ONE_COL=p.r_one, BQ=p.r_tile, BK=p.r_cols)
    if T > 1:
        yield "R-step (first)", tm._r_step_kernel, dict(r, FROM_SUMMARY=False, WANT_Y=False, PDL=mask), p.r_warps
        yield "L-step (summaries)", tm._l_sum_kernel, dict(base, GROUPED=p.l_grouped, ONE_COL=p.l_one, BQ=p.s_rows,
                                                           BK=p.s_cols), p.s_warps
    yield "R-step (final)", tm._r_step_kernel, dict(r, FROM_SUMMARY=T > 1, WANT_Y=True, PDL=mask or T > 1), p.r_warps
    yield "L-step (output)", tm._l_out_kernel, dict(base, DV=64, BDV=64, GROUPED=p.l_grouped, ONE_COL=p.l_one,
                                                   BQ=p.l_tile, BK=p.l_cols), p.l_warps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", default=["4096", "16384", "16384:2"], help="N[:T]")
    p.add_argument("--warps", type=int, default=None, help="warps per program (default: the launcher's)")
    p.add_argument("--mask", action="store_true", help="with a key-padding mask")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: this compiles the kernels")
    import triton

    print(f"triton {triton.__version__}, sm_90, mask={args.mask}")
    for case in args.cases:
        N, T = (int(x) for x in (case.split(":") + ["1"])[:2])
        for name, kernel, constexprs, warps in kernel_configs(N, T, args.mask):
            warps = args.warps or warps
            compiled = compile_sm90(kernel, constexprs, specialize=True, num_warps=warps, num_stages=3)
            print(f"N={N:6d} T={T} {name:19s} {warps} warps, {resources(compiled)}", flush=True)


if __name__ == "__main__":
    main()
