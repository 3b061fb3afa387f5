"""Saving and loading a calibrated model: the weights stay the original ones (plain transformers
loads the exact softmax model), the correction lives beside them in ``monarch_calibration.safetensors``
and ``config.json``'s ``monarch_attention`` entry names it; ``monarch_convert.from_pretrained``
folds it back in memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CalibratedSetting:
    """A calibrated checkpoint's settings and correction, as one setting of an evaluation sweep
    (``monarch-convert eval --setting calibrated=DIR``)."""

    settings: Any  # MonarchConfig
    calibration: Calibration | None
    source: str


def load_calibrated(folder: str | Path) -> CalibratedSetting:
    """The settings and the correction a folder written by ``monarch-convert --calibrate`` (or
    :func:`save_pretrained`) holds, without loading its weights."""
    import json

    from ..config import MonarchConfig

    config_file = Path(folder).expanduser() / "config.json"
    try:
        entry = json.loads(config_file.read_text(encoding="utf-8")).get("monarch_attention") or {}
        settings = MonarchConfig.from_dict(dict(entry["settings"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MonarchConvertError(f"{folder} is not a converted checkpoint folder ({config_file}: {e})") from e
    calibration = Calibration.load(_calibration_path(str(folder), {})) if entry.get("calibration") else None
    return CalibratedSetting(settings, calibration, str(folder))
