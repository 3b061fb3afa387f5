"""Healing checkpoints: the moving weights, the optimizer and schedule, and the step, in one
file of a checkpoint folder, so that a run stopped at step ``s`` resumes exactly there.

Only the weights healing moves are saved (the rest are the model's own, given again on resume).
The file is written beside its final name and renamed over it, so a checkpoint is never half
written: an interruption while saving leaves the previous one. A ``fingerprint`` of the run's
settings is stored with it; resuming with other settings is refused rather than silently mixing
two runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import MonarchConvertError

STATE_FILE = "heal_state.pt"
FORMAT = 1


def save(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain values) to ``folder/heal_state.pt``; its path."""
    import torch

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / STATE_FILE
        partial = folder / f".{STATE_FILE}.partial-{os.getpid()}"
        torch.save({"format": FORMAT, **state}, partial)
        os.replace(partial, target)
    except OSError as e:
        raise MonarchConvertError(f"cannot write the healing checkpoint in {folder}: {e.strerror or e}") from e
    return target


def load(folder: Path | None, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` (None if there is none); refused if it is of another run."""
    import torch

    if folder is None or not (Path(folder) / STATE_FILE).is_file():
        return None
    path = Path(folder) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise MonarchConvertError(f"cannot read the healing checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MonarchConvertError(f"{path} is not a healing checkpoint of this version of monarch-convert")
    differ = [f"{k}: {state['fingerprint'].get(k)!r} there, {v!r} now" for k, v in fingerprint.items()
              if state["fingerprint"].get(k) != v]
    if differ:
        raise MonarchConvertError(
            f"{folder} holds the checkpoint of another healing run ({'; '.join(differ)}): "
            "remove it, or choose another checkpoint folder"
        )
    return state
