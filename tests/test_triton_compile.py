"""The Triton kernels compile for Hopper (sm_90) down to a cubin, on this CPU machine.

The interpreter tests run the kernels' Python semantics; they never go through Triton's compiler
(typing, constexpr branches, layouts), so a kernel can pass them and still fail to build on a GPU.
``scripts/benchmarks/kernel_resources.py --every-variant`` compiles every kernel variant the launcher
uses, here in a subprocess without TRITON_INTERPRET (which must be unset when triton is imported)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

RESOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "benchmarks",
                         "kernel_resources.py")


@pytest.mark.slow
def test_every_kernel_variant_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, RESOURCES, "--every-variant"], capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled ") == 23  # 16, and 7 with the op's options on


@pytest.mark.slow
def test_backward_kernels_compile_for_sm90():
    """Every kind of launch of the backward (recomputation and walk back, T = 2, with a mask): the
    blocks of an offset in one tile (b = 64) and in tiles with their statistics (m = 256), and
    blocks longer than a tile (b = 182, m = 181, T = 1); at T = 1 (b = 64 and b = 182) the output
    stage also reading the training forward's kept intermediates; the zeroing and casting launches."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, RESOURCES, "--backward", "--mask", "4096:2", "8192:2:32", "32768", "4096"],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" registers, ") == 8 + 10 + 8 + 5


@pytest.mark.slow
def test_onchip_kernel_resources_for_sm90():
    """``kernel_resources.py --onchip`` compiles the on-chip kernel at its default warps (whatever the
    launcher's default strategy) and reports its registers, spills and shared memory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, RESOURCES, "--onchip", "--mask", "256", "200:2"], capture_output=True,
                            text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" on-chip ") == 2 and result.stdout.count(" registers, ") == 2


@pytest.mark.slow
def test_al_home_and_register_cap_overrides_compile_for_sm90():
    """``--al-home off --maxnreg 0`` compiles the tiled call's launches as ``Knobs(al_home=False,
    maxnreg=0)`` makes them (what the sixth H100 round's compile counts used)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, RESOURCES, "--al-home", "off", "--maxnreg", "0", "1024"],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if " registers, " in line]
    assert len(lines) == 2 and all("cap -" in line for line in lines), result.stdout
