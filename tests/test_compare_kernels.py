"""scripts/compare_kernels.py loads another version's kernels next to this tree's (CPU part)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

pytest.importorskip("triton")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import compare_kernels  # noqa: E402


def test_imports_other_kernels_as_their_own_package(tmp_path):
    shutil.copytree(os.path.join(ROOT, "kernels"), tmp_path / "kernels")
    old = compare_kernels.import_kernels(str(tmp_path))
    from monarch_convert.kernels import triton_monarch as new

    assert old.__file__ == str(tmp_path / "kernels" / "triton_monarch.py")
    assert old is not new and old.monarch_attention_triton is not new.monarch_attention_triton
    assert old.output_like.__module__ == "_old_kernels.layout"  # its relative imports stay in its folder


def test_folder_without_kernels_exits_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="no kernels/triton_monarch.py"):
        compare_kernels.import_kernels(str(tmp_path))
