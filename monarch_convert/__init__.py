"""monarch-convert: zero-shot conversion of Hugging Face transformers to MonarchAttention."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names and the module that holds each; imported on first use so that
# `import monarch_convert` (and `monarch-convert --help`) stays fast.
_LAZY = {
    "monarch_attention": "monarch_convert.kernels.ops",
    # Conversion lives in `conversion.py`, not `convert.py` (and its report in `conversion_records.py`):
    # a submodule named like a function would replace `monarch_convert.<function>` with the module
    # as soon as it is imported.
    "convert": "monarch_convert.conversion",
    "revert": "monarch_convert.conversion",
    "is_converted": "monarch_convert.conversion",
    "softmax": "monarch_convert.conversion",
    "conversion_report": "monarch_convert.conversion",
    "ConversionReport": "monarch_convert.conversion_records",
    "from_pretrained": "monarch_convert.loading",
    "MonarchConfig": "monarch_convert.config",
    "MonarchConvertError": "monarch_convert.errors",
    "push_to_hub": "monarch_convert.hub.upload",
    "build_model_card": "monarch_convert.hub.card",
    "evaluate": "monarch_convert.evaluation.core",
    "EvaluationReport": "monarch_convert.evaluation.report",
    "measure_fidelity": "monarch_convert.evaluation.fidelity",
    "calibrate": "monarch_convert.calibration.run",
    "CalibrationReport": "monarch_convert.calibration.report",
    "apply_calibration": "monarch_convert.conversion",
    "save_pretrained": "monarch_convert.calibration.saving",
    "LayerSetting": "monarch_convert.config",
    "heal": "monarch_convert.healing.core",
    "HealReport": "monarch_convert.healing.core",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'monarch_convert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
