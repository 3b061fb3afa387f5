"""The evaluator: task metrics before and after conversion, fidelity, sweeps, reports.

``monarch_convert.evaluate`` is :func:`core.evaluate`; ``monarch-convert eval`` is
:func:`cli.eval_command`. Submodules import torch and friends only when called.

- ``core.py``: ``evaluate`` and its stages; ``options.py``: its options, grouped
- ``tasks/``: one module per task, on the hooks of ``tasks/base.py``'s ``Task``
- ``runner.py``: one timed pass over the batches; ``distributed.py``: the processes
  under ``accelerate launch``; ``timing.py``, ``progress.py``: clocks and progress bars
- ``data.py``: datasets and samples; ``metrics.py``: task metrics (Hub or offline)
- ``fidelity.py``: label-free fidelity, per layer and at the output
- ``results.py``, ``report.py``, ``plot.py``: the report's rows, its files, its plot
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "evaluate": "core",
    "EvaluationReport": "report",
    "measure_fidelity": "fidelity",
    "LayerFidelity": "fidelity",
    "load_data": "data",
    "TASKS": "tasks",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
