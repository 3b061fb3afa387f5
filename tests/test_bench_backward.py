"""scripts/benchmarks/bench_backward.py runs end to end on the CPU (``--smoke``: Triton's
interpreter, the kernels' gradients checked against the reference's) and writes its CSV."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from test_cli_helpers import cli_env

pytest.importorskip("triton")

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "benchmarks",
                      "bench_backward.py")


@pytest.mark.slow
def test_smoke_run_writes_one_row_per_provider(tmp_path):
    out = tmp_path / "bwd.csv"
    env = cli_env(PYTHONSAFEPATH=None, TRITON_INTERPRET="1")  # a script run by path needs its own folder
    result = subprocess.run([sys.executable, SCRIPT, "--smoke", "--steps", "2", "--out", str(out)],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert [(r["provider"], r["steps"]) for r in rows] == [("monarch", "2"), ("reference", "2")]
    assert all(float(r["median_ms"]) > 0 for r in rows)
