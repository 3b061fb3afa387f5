"""scripts/benchmarks/bench_cpu.py on small cases: a row per provider and case, SDPA's speed-up 1,
and the three providers agreeing on what they compute."""

from __future__ import annotations

import csv

import pytest
import torch
from bench_scripts import imported

pytest.importorskip("triton")  # bench_utils imports the launcher's knobs


@pytest.fixture(scope="module")
def bench_cpu():
    yield from imported("bench_cpu")


def test_rows_per_case_and_provider(bench_cpu, tmp_path, capsys):
    path = tmp_path / "cpu.csv"
    bench_cpu.main(["--cases", "2:64", "3:50:right", "--steps", "1", "2", "--rounds", "2", "--csv", str(path)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3
    assert {r["provider"] for r in rows} == {"sdpa", "monarch-reference", "monarch-torch"}
    assert all(float(r["median_ms"]) > 0 and r["gpu"].startswith("cpu: ") for r in rows)
    assert all(r["speedup_vs_best_sdpa"] == "1.00" for r in rows if r["provider"] == "sdpa")
    padded = [r for r in rows if r["seq"] == "50"]
    assert all(0 < float(r["pad_frac"]) < 0.5 for r in padded) and all(r["block"] == "8" for r in padded)
    assert "| B | N | padding | T |" in capsys.readouterr().out
    assert {r["note"] for r in rows} == {"pad_type post"}


def test_pre_padding_is_passed_on(bench_cpu):
    q, k, v, mask = bench_cpu.inputs(2, 30, right=True)
    with torch.inference_mode():
        for pad_type in ("post", "pre"):
            calls = bench_cpu.providers(q, k, v, mask, 4, 1, pad_type)
            torch.testing.assert_close(calls["monarch-torch"](), calls["monarch-reference"](), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(calls["monarch-torch"](), bench_cpu.providers(q, k, v, mask, 4, 1)["monarch-torch"]())


def test_the_providers_compute_the_same_attention(bench_cpu):
    q, k, v, mask = bench_cpu.inputs(3, 50, right=True)
    with torch.inference_mode():
        calls = bench_cpu.providers(q, k, v, mask, 8, 2)
        torch.testing.assert_close(calls["monarch-torch"](), calls["monarch-reference"](), rtol=1e-5, atol=1e-5)
        calls = bench_cpu.providers(q, k, v, mask, 50, 1)  # one block: exact softmax attention
        sdpa = calls["sdpa"]().masked_fill(~mask[:, None, :, None], 0.0)
        torch.testing.assert_close(calls["monarch-reference"](), sdpa, rtol=1e-5, atol=1e-5)


def test_compile_adds_the_compiled_calls(bench_cpu, tmp_path, capsys):
    """--compile: the entry point and the reference under torch.compile, with the eager calls'
    results, their rows and a second table."""
    path = tmp_path / "cpu.csv"
    bench_cpu.main(["--cases", "2:40:right", "--steps", "1", "--rounds", "2", "--compile", "--csv", str(path)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["provider"] for r in rows] == ["sdpa", "monarch-reference", "monarch-torch", "monarch-reference+compile",
                                             "monarch-torch+compile"]
    assert "| path eager ms | reference compiled ms | path compiled ms |" in capsys.readouterr().out
    q, k, v, mask = bench_cpu.inputs(2, 40, right=True)
    with torch.inference_mode():
        calls = bench_cpu.providers(q, k, v, mask, 7, 1, compiled=True)
        torch.testing.assert_close(calls["monarch-torch+compile"](), calls["monarch-torch"](), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(calls["monarch-reference+compile"](), calls["monarch-reference"](), rtol=1e-5,
                                   atol=1e-5)
