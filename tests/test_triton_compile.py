"""The Triton kernels compile for Hopper (sm_90) down to a cubin, on this CPU machine.

The interpreter tests run the kernels' Python semantics; they never go through Triton's compiler
(typing, constexpr branches, layouts), so a kernel can pass them and still fail to build on a GPU.
This compiles every kernel variant the launcher uses, in a subprocess without TRITON_INTERPRET
(which must be unset when triton is imported)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def variants():
    import monarch_convert.kernels.triton_monarch as tm

    common = dict(D=72, HAS_MASK=True, IEEE=False, BQ=64, BK=64, BD=128, PDL=True)
    with_v = dict(common, DV=64, BDV=64)
    for grouped, one_col in ((True, True), (False, True), (False, False)):
        # Looped programs may have fewer rows than columns (row tiles below the block size).
        cols = dict(GROUPED=grouped, ONE_COL=one_col, BK=64 if grouped else 128)
        yield tm._r_step_kernel, dict(with_v, FROM_SUMMARY=True, WANT_Y=True, **cols)
        yield tm._l_out_kernel, dict(with_v, **cols)
        yield tm._l_sum_kernel, dict(common, **cols)
    yield tm._r_step_kernel, dict(with_v, FROM_SUMMARY=False, WANT_Y=False, GROUPED=False, ONE_COL=True, BK=128,
                                  PDL=False)
    whole = dict(D=72, DV=64, HAS_MASK=False, R_GROUPED=True, R_ONE_COL=True, L_GROUPED=False, L_ONE_COL=False,
                 IEEE=False, R_TILE=64, R_COLS=64, L_TILE=32, L_COLS=64, S_COLS=32, BD=128, BDV=64, PDL=False)
    yield tm._fused_kernel, dict(whole, NUM_STEPS=2)


def compile_all() -> None:
    sys.path.insert(0, SCRIPTS)
    from kernel_resources import compile_sm90

    for kernel, constexprs in variants():
        assert compile_sm90(kernel, constexprs).asm["cubin"], kernel.fn.__name__
        print("compiled", kernel.fn.__name__)


@pytest.mark.slow
def test_every_kernel_variant_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled ") == 11


if __name__ == "__main__":
    compile_all()
