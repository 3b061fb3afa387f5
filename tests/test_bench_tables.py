"""scripts/benchmarks/tables.py: docs/benchmarks.md's tables from the benchmarks' CSV rows."""

from __future__ import annotations

import csv
import os

import pytest
from bench_scripts import imported

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H200_CSV = os.path.join(ROOT, "docs", "benchmarks_h200.csv")
FIELDS = ("kernel provider dtype batch heads seq head_dim block steps pad_frac median_ms speedup_vs_best_sdpa "
          "best_sdpa achieved_gbps floor_fraction copy_gbps gpu versions date commit note").split()


@pytest.fixture(scope="module")
def tables():
    yield from imported("tables")


def _row(kernel, provider, ms, commit="c0ffee1", **fields):
    row = dict.fromkeys(FIELDS, "")
    row.update(kernel=kernel, provider=provider, dtype="float16", batch="8", heads="12", seq="4096", head_dim="64",
               block="64", steps="1", pad_frac="0.0", median_ms=str(ms), gpu="NVIDIA H200", versions="torch x",
               date="2026-12-07", commit=commit)
    row.update({k: str(v) for k, v in fields.items()})
    return row


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_kernel_table_reproduces_the_recorded_h200_table(tables):
    # docs/benchmarks.md, "H200 ... Kernels": paper-long at N = 16384, code b486ca7.
    rows = [r for r in tables.read_rows([H200_CSV]) if r["commit"] == "b486ca7"]
    text = tables.tables(rows, ["op"])
    assert text.startswith("Code `b486ca7` on an NVIDIA H200 (torch 2.11.0+cu130;")
    assert "copy bandwidth 4222 GB/s" in text
    assert ("| paper-long | float16 | 1 | 16384 | 128 | 1 | 0% | 0.0978 | 1.8432 (cudnn) | 18.86x | 18.96x | 0.244 |"
            in text.splitlines())
    assert "| padded-50% | float16 | 8 | 4096 | 64 | 1 | 50% | 0.1244 |" in text


def test_compare_table_gives_each_variants_change_against_old(tables):
    rows = [_row("compare:old:unpadded", "triton+graph", 0.2), _row("compare:default:unpadded", "triton+graph", 0.19),
            _row("compare:nocap:unpadded", "triton+graph", 0.21)]
    lines = tables.tables(rows, ["compare"]).splitlines()
    assert lines[2] == "| case | B | N | T | padding | old ms | default ms | change | nocap ms | change |"
    assert lines[4] == "| unpadded | 8 | 4096 | 1 | 0% | 0.2000 | 0.1900 | -5.0% | 0.2100 | +5.0% |"


def test_rows_of_two_commits_make_two_tables(tables):
    rows = [_row("host-time", "monarch", 0.0213, commit="aaaaaaa"), _row("host-time", "sdpa", 0.0205, commit="aaaaaaa"),
            _row("host-time", "monarch-old", "nan", commit="aaaaaaa"),  # no --old: a column of nan, left out
            _row("host-time", "monarch", 0.0301, commit="bbbbbbb", pad_frac=0.25)]
    text = tables.tables(rows, ["host"])
    first, second = text.split("\n\nCode ")
    assert first.startswith("Code `aaaaaaa`") and "| 8 | 4096 | 1 | no | 21.3 | 20.5 |" in first
    assert second.startswith("`bbbbbbb`") and "| 8 | 4096 | 1 | yes | 30.1 |" in second


def test_model_table_sets_each_mode_beside_its_attention_free_bound(tables):
    rows = [_row("model:bert-base", "sdpa+compile", 4.382, speedup_vs_best_sdpa=1.0, batch=1),
            _row("model:bert-base", "monarch-triton+compile", 2.047, speedup_vs_best_sdpa=2.141, batch=1),
            _row("model:bert-base", "attention-free+compile", 1.682, speedup_vs_best_sdpa=2.605, batch=1)]
    lines = tables.tables(rows, ["model"]).splitlines()
    # Columns empty in every row (no eager or GPU rows here) are left out.
    assert lines[2] == ("| model | B | N | SDPA compiled ms | converted compiled ms | x | bound x |")
    assert lines[-1] == "| bert-base | 1 | 4096 | 4.382 | 2.047 | 2.14x | 2.60x |"


def test_memory_table_reads_the_peak_from_the_note(tables):
    rows = [_row("memory:paper-long", "triton", "", batch=1, seq=16384, note="peak/(q,k,v,out) 1.2578; old 1.5; x")]
    assert tables.tables(rows, ["memory"]).splitlines()[-1] == "| paper-long | 1 | 16384 | 1 | 0% | 1.2578 |"


def test_memory_table_names_the_knobs_of_rows_not_run_by_default(tables):
    note = "peak/(q,k,v,out) {}; old nan; chunk_bytes {}; variant {}"
    rows = [_row("memory:paper-long", "triton", "", batch=1, seq=16384, note=note.format(1.5078, None, "default")),
            _row("memory:paper-long", "triton", "", batch=1, seq=16384, commit="bbbbbbb",
                 note=note.format(1.2578, None, "alhome")),
            _row("memory:unpadded", "triton", "", batch=8, seq=4096, commit="bbbbbbb",
                 note=note.format(1.17, 33554432, "default"))]
    lines = tables.tables(rows, ["memory"]).splitlines()
    assert "| paper-long | 1 | 16384 | 1 | 0% | 1.5078 |" in lines  # the default's table: no knobs column
    assert "| paper-long | 1 | 16384 | 1 | 0% | variant alhome | 1.2578 |" in lines
    assert "| unpadded | 8 | 4096 | 1 | 0% | chunk_bytes 33554432 | 1.17 |" in lines


def test_command_line_filters_and_fails_in_one_line(tables, tmp_path, capsys):
    path = _write(tmp_path / "rows.csv", [_row("memory:paper-long", "triton", "", note="peak/(q,k,v,out) 1.1")])
    assert tables.main([path, "--gpu", "H200"]) == 0
    assert "| paper-long |" in capsys.readouterr().out
    assert tables.main([path, "--commit", "0000000"]) == 1
    assert capsys.readouterr().err.strip() == "tables.py: no rows of the kinds asked match"
    assert tables.main([str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_heal_table_gives_the_step_rate_and_its_bound(tables):
    rows = [_row("heal:bert-base", "sdpa", 97.1855, speedup_vs_best_sdpa=1.0),
            _row("heal:bert-base", "attention-free", 69.6482, speedup_vs_best_sdpa=1.395),
            _row("heal:bert-base", "monarch-triton", 75.3618, speedup_vs_best_sdpa=1.290)]
    line = tables.tables(rows, ["heal"]).splitlines()[-1]
    assert line == "| bert-base | float16 | 8 | 4096 | 97.19 | 75.36 | 1.29x | 1.40x |"
