"""Every function of the package reads in one screen (README, "Repository layout"): at most 60
lines, docstring included. A Triton program may be longer where splitting would change its
generated code; its docstring then says why, in a sentence starting "Longer than a screen:"."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60


def _functions():
    for folder in ("monarch_convert", "kernels", "patches", "configs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield path.relative_to(ROOT), node


def test_every_function_reads_in_one_screen():
    long = []
    for path, node in _functions():
        lines = node.end_lineno - node.lineno + 1
        excused = "Longer than a screen:" in (ast.get_docstring(node) or "")
        if lines > LIMIT and not excused:
            long.append(f"{path}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over one screen:\n" + "\n".join(long)
