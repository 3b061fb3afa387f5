"""monarch-convert: zero-shot conversion of Hugging Face transformers to MonarchAttention."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names and the module that holds each; imported on first use so that
# `import monarch_convert` (and `monarch-convert --help`) stays fast.
_LAZY = {
    "monarch_attention": "monarch_convert.kernels.ops",
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
