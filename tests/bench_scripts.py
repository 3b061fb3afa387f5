"""Importing a script of scripts/benchmarks/ in a test, the way it runs (its own folder first on
sys.path, for ``bench_utils``), without leaving that folder on the path for other tests."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "benchmarks")


def imported(name: str) -> Iterator:
    """Yields the module ``name`` of scripts/benchmarks/ (a module-scoped fixture's body)."""
    sys.path.insert(0, BENCH)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(BENCH)
