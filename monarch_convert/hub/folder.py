"""The folder that ``monarch-convert MODEL --out DIR`` writes, as the card and the upload read it:
``config.json`` and ``conversion.json`` must be there, ``evaluation.json`` may be."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Optional

from ..errors import MonarchConvertError
from ..evaluation.report import JSON_FILE as EVALUATION_FILE
from ..export import REPORT_FILE as CONVERSION_FILE

CONFIG_FILE = "config.json"

logger = logging.getLogger(__name__)


def read_json(path: Path, *, required: bool) -> Optional[dict]:
    """The JSON object in ``path``. A required file that is missing or unreadable is a one-line
    error naming the command that writes it; an optional one is None (with a warning if unreadable)."""
    if not path.is_file():
        if required:
            raise MonarchConvertError(
                f"{path.parent} is not a converted checkpoint: {path.name} is missing "
                f"(write one with `monarch-convert MODEL --out {shlex.quote(str(path.parent))}`)"
            )
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if required:
            raise MonarchConvertError(f"cannot read {path}: {exc}") from None
        logger.warning("ignoring %s: %s", path, exc)
        return None
    if not isinstance(data, dict):
        if required:
            raise MonarchConvertError(f"cannot read {path}: expected a JSON object")
        return None
    return data


def read_converted_dir(local_dir: Path) -> tuple[dict, dict]:
    """``(config.json, conversion.json)`` of the converted folder ``local_dir``; a one-line error if
    it is not one."""
    if not local_dir.is_dir():
        raise MonarchConvertError(
            f"{local_dir} is not a folder: give the folder written by `monarch-convert MODEL --out DIR`"
        )
    config = read_json(local_dir / CONFIG_FILE, required=True)
    conversion = read_json(local_dir / CONVERSION_FILE, required=True)
    return config or {}, conversion or {}


def read_evaluation(local_dir: Path) -> Optional[dict]:
    """``evaluation.json`` (written by ``monarch-convert eval --out DIR``), or None."""
    return read_json(local_dir / EVALUATION_FILE, required=False)
