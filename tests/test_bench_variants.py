"""scripts/benchmarks/bench_variants.py: the sweep's cases (CPU part; the timing needs a GPU)."""

from __future__ import annotations

import argparse

import pytest
from bench_scripts import imported


@pytest.fixture(scope="module")
def variants():
    yield from imported("bench_variants")


def test_sweep_crosses_lengths_and_batches_with_its_mask_and_steps(variants):
    args = argparse.Namespace(seqs=[1024, 2048], batches=[1, 8], steps=2, mask="pad")
    cases = variants.sweep(args)
    assert [(c.name, c.batch, c.seq, c.steps, c.mask, c.pad_frac) for c in cases] == [
        ("sweep-T2-pad", 1, 1024, 2, "pad", 0.3), ("sweep-T2-pad", 1, 2048, 2, "pad", 0.3),
        ("sweep-T2-pad", 8, 1024, 2, "pad", 0.3), ("sweep-T2-pad", 8, 2048, 2, "pad", 0.3)]
    plain = variants.sweep(argparse.Namespace(seqs=[512], batches=[8], steps=1, mask="none"))
    assert [(c.name, c.mask, c.pad_frac, c.block) for c in plain] == [("sweep", "none", 0.0, 23)]
