"""scripts/benchmarks/compare_versions.py loads another version's kernels next to this tree's (CPU part)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from test_cli_helpers import cli_env

pytest.importorskip("triton")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARE = os.path.join(ROOT, "scripts", "benchmarks", "compare_versions.py")


def _check(folder):
    # A script run by path needs its own folder on sys.path: not with PYTHONSAFEPATH (scripts/test.sh).
    return subprocess.run([sys.executable, COMPARE, str(folder), "--check"], capture_output=True, text=True,
                          timeout=300, env=cli_env(PYTHONSAFEPATH=None))


def test_imports_other_kernels_as_their_own_package(tmp_path):
    shutil.copytree(os.path.join(ROOT, "kernels"), tmp_path / "kernels")
    result = _check(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # The launcher of the copy, not this tree's: its relative imports stay in its folder.
    launcher, layout_module = result.stdout.split()
    assert launcher == str(tmp_path / "kernels" / "triton" / "launch.py")
    assert layout_module == "_old_kernels.layout"


def test_folder_without_kernels_exits_with_a_message(tmp_path):
    result = _check(tmp_path)
    assert result.returncode != 0 and "no kernels/triton/launch.py" in result.stderr
