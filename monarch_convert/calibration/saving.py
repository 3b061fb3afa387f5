"""Saving and loading a calibrated model: the weights stay the original ones (plain transformers
loads the exact softmax model), the correction lives beside them in ``monarch_calibration.safetensors``
and ``config.json``'s ``monarch_attention`` entry names it; ``monarch_convert.from_pretrained``
folds it back in memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import MonarchConvertError
from .correction import CALIBRATION_FILE, Calibration


def save_pretrained(model: Any, save_directory: str | Path, **kwargs: Any) -> None:
    """``model.save_pretrained(save_directory, **kwargs)``, and the calibration file if the model
    has a correction folded in. ``model.save_pretrained`` alone writes the original weights and the
    settings but not the correction (``from_pretrained`` then says so)."""
    from ..conversion import calibration_of

    model.save_pretrained(save_directory, **kwargs)
    calibration = calibration_of(model)
    if calibration is not None:
        calibration.save(save_directory)


def _calibration_path(source: str, hf_kwargs: dict[str, Any]) -> str:
    """The calibration file of a local folder or a Hub repository."""
    if os.path.isdir(os.path.expanduser(source)):
        path = Path(source).expanduser() / hf_kwargs.get("subfolder", "") / CALIBRATION_FILE
        if not path.is_file():
            raise MonarchConvertError(
                f"{source} records a calibration but has no {CALIBRATION_FILE} (saved with model.save_pretrained "
                "alone?): save calibrated models with monarch_convert.save_pretrained"
            )
        return str(path)
    from huggingface_hub import hf_hub_download

    from ..loading import failure_reason

    keys = ("revision", "cache_dir", "token", "subfolder", "local_files_only", "force_download")
    try:
        return hf_hub_download(source, CALIBRATION_FILE, **{k: hf_kwargs[k] for k in keys if k in hf_kwargs})
    except Exception as e:  # huggingface_hub raises many kinds
        raise MonarchConvertError(f"cannot load the calibration of {source}: {failure_reason(e)}") from e


def reapply(model: Any, source: str, recorded: dict | None, saved_settings: Any, hf_kwargs: dict[str, Any]) -> None:
    """Fold the calibration a checkpoint recorded (``recorded``: its config entry) into ``model``,
    converted from it, when it runs the settings the calibration was fitted for (``saved_settings``)."""
    from ..conversion import apply_calibration, conversion_report

    if not recorded or saved_settings is None or conversion_report(model).settings != saved_settings:
        return
    calibration = Calibration.load(_calibration_path(source, hf_kwargs))
    apply_calibration(model, calibration)
