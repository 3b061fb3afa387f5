"""Packaging: kernels/, patches/, configs/ install only as monarch_convert subpackages, and
running from the repository root leaves transformers' view of Hugging Face's `kernels` intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_python_from_the_repo_root_with_safe_path_imports_models():
    """``python -P -c`` (what PYTHONSAFEPATH=1 in scripts/test.sh and scripts/demo.sh gives every
    child) from the repository root: the folder ``kernels/`` is not on sys.path, so transformers
    (>= 5.25 installs Hugging Face's ``kernels`` and imports names from it when a model loads)
    imports its models, and our kernels import as ``monarch_convert.kernels``."""
    out = run_python(
        "import transformers.models.bert.modeling_bert, monarch_convert\n"
        "import importlib.util\n"
        "from monarch_convert.kernels.ops import monarch_attention\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(spec is None or 'site-packages' in spec.origin, monarch_attention.__module__)\n",
        "-P",
    )
    assert out.split() == ["True", "monarch_convert.kernels.ops"]


def test_setup_scripts_keep_the_repo_root_off_sys_path():
    for script in ("test.sh", "demo.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "PYTHONSAFEPATH=1" in text, script


def test_subpackages_map_to_top_level_folders():
    out = run_python(
        "import monarch_convert.kernels as k, monarch_convert.patches as p, monarch_convert.configs as c\n"
        "print(k.__file__); print(p.__file__); print(c.__file__)\n"
    )
    paths = [Path(line) for line in out.split()]
    assert [p.parent.name for p in paths] == ["kernels", "patches", "configs"]


def test_top_level_folders_import_nothing():
    for name in ("kernels", "patches", "configs"):
        text = (ROOT / name / "__init__.py").read_text()
        assert not any(line.lstrip().startswith(("import ", "from ")) for line in text.splitlines()), name


def test_help_is_fast_and_imports_no_torch():
    out = run_python(
        "import sys\n"
        "from monarch_convert import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('TORCH', 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    assert "--out" in out and "TORCH False False" in out


def test_every_subpackage_is_in_the_wheel():
    """pyproject.toml lists packages explicitly (the package-dir mapping rules out discovery): each
    folder holding an __init__.py must be listed, or a non-editable install lacks it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {"monarch_convert": "monarch_convert", "kernels": "monarch_convert.kernels",
             "patches": "monarch_convert.patches", "configs": "monarch_convert.configs"}
    found = set()
    for folder, package in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(setup["packages"])
