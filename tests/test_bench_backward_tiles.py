"""scripts/benchmarks/bench_backward_tiles.py without a GPU: the configurations it runs, and its
one-line refusal on a machine without CUDA."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch
from bench_scripts import BENCH, imported
from test_cli_helpers import cli_env

pytest.importorskip("triton")  # bench_utils imports the launcher's knobs
SCRIPT = os.path.join(BENCH, "bench_backward_tiles.py")


@pytest.fixture(scope="module")
def bench_backward_tiles():
    yield from imported("bench_backward_tiles")


def test_each_kernel_gets_its_default_then_the_grid(bench_backward_tiles):
    a = argparse.Namespace(kernels=["_r_bwd", "_l_bwd"], rows=[16, 32], warps=[4], stages=[1, 3])
    got = bench_backward_tiles.configs(a)
    assert got[:2] == [("_r_bwd", None), ("_l_bwd", None)]
    assert got[2:6] == [("_r_bwd", (16, 4, 1)), ("_r_bwd", (16, 4, 3)), ("_r_bwd", (32, 4, 1)),
                        ("_r_bwd", (32, 4, 3))]
    assert len(got) == 2 + 2 * 4


def test_refuses_without_cuda_in_one_line():
    if torch.cuda.is_available():
        return
    result = subprocess.run([sys.executable, SCRIPT, "--seqs", "64"], capture_output=True, text=True, timeout=300,
                            env=cli_env(PYTHONSAFEPATH=None))
    assert result.returncode == 1
    assert result.stderr.strip() == "bench_backward_tiles.py needs a CUDA GPU"
