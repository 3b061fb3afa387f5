"""scripts/benchmarks/bench_heal_step.py on tiny shapes on the CPU (``--smoke``): every provider
runs heal's step the number of times asked, writes its CSV row and its line of the table; the
SDPA baseline's teacher is its student's own function (loss 0), the attention-free student is not."""

from __future__ import annotations

import csv
import os
import re
import sys

import pytest

pytest.importorskip("triton")  # bench_utils imports the launcher's knobs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "scripts", "benchmarks")


@pytest.fixture(scope="module")
def bench_heal_step():
    sys.path.insert(0, BENCH)
    try:
        import bench_heal_step

        yield bench_heal_step
    finally:
        sys.path.remove(BENCH)


def test_smoke_run_times_every_provider(bench_heal_step, tmp_path, capsys):
    bench_heal_step.main(["--smoke", "--csv", str(tmp_path / "rows.csv")])
    with open(tmp_path / "rows.csv", newline="") as f:
        rows = {row["provider"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["sdpa", "attention-free", "monarch-torch"]
    losses = {}
    for provider, row in rows.items():
        assert row["kernel"] == "heal:bert-base" and row["seq"] == "64" and float(row["median_ms"]) > 0
        assert "median of 2 steps after 1 warm-up" in row["note"], provider
        first, last = re.search(r"loss (\S+) -> (\S+);", row["note"]).groups()
        losses[provider] = float(first)
    assert rows["sdpa"]["speedup_vs_best_sdpa"] == "1.000"
    assert rows["monarch-torch"]["block"] == "8" and "monarch_convert.heal" in rows["monarch-torch"]["note"]
    assert losses["sdpa"] == 0.0 and losses["attention-free"] > 0.0
    *table, host = capsys.readouterr().out.strip().splitlines()[-4:]
    assert [line.split()[0] for line in table] == ["sdpa", "attention-free", "monarch-torch"]
    assert table[0].split()[-1] == "1.00x"
    assert host.startswith("host work inside each step (GPU idle): tokenising a batch ")
    assert "softmax switch" in rows["monarch-torch"]["note"] and "softmax switch" not in rows["sdpa"]["note"]


def test_tokenizer_gives_seq_tokens_of_the_vocabulary(bench_heal_step):
    tokenizer = bench_heal_step.make_tokenizer(64)
    ids = tokenizer(bench_heal_step.make_texts(1, 64, 0), truncation=True, max_length=64)["input_ids"][0]
    assert len(ids) == 64 and ids[0] == 2 and ids[-1] == 3
    assert min(ids[1:-1]) >= len(bench_heal_step.SPECIAL)  # words, not [UNK]
