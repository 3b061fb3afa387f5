"""Wall time of work on a device."""

from __future__ import annotations

import statistics
from typing import Any


def synchronize(device: Any) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously), so that a clock read
    afterwards includes it; nothing to wait for on the CPU."""
    import torch

    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
