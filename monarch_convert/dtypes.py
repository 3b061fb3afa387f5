"""Weight dtypes by name, as the CLI, the loaders and the evaluator take them."""

from __future__ import annotations

from typing import Any

from .errors import MonarchConvertError

DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")
# Short spellings accepted as well.
_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def check_dtype_name(name: str, option: str = "dtype") -> str:
    """``name`` in its canonical spelling; a one-line error naming ``option`` otherwise."""
    canonical = _ALIASES.get(name, name)
    if canonical not in DTYPE_NAMES:
        raise MonarchConvertError(f"{option} must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return canonical


def torch_dtype(name: Any, option: str = "dtype") -> Any:
    """The ``torch.dtype`` a name stands for, ``None`` for ``"auto"`` / ``None`` (the checkpoint's
    own); a ``torch.dtype`` is returned as is."""
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    canonical = check_dtype_name(name, option)
    return None if canonical == "auto" else getattr(torch, canonical)
