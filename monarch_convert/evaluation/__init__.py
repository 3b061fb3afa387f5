"""The evaluator: task metrics before and after conversion, fidelity, sweeps, reports.

``monarch_convert.evaluate`` is :func:`core.evaluate`; ``monarch-convert eval`` is
:func:`cli.eval_command`. Submodules import torch and friends only when called.
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
