"""How the public card and commit message name a model or dataset: a Hub id as it is, anything on
the uploader's disk by its last path component only (a public card must not reveal the uploader's
file system)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}(/[A-Za-z0-9][\w.\-]{0,95})?$")


def hub_model_id(source: Any) -> Optional[str]:
    """``source`` if it looks like a Hub model id (not a local path), else None."""
    if not isinstance(source, str) or not _HUB_ID.match(source) or ".." in source:
        return None
    if source.endswith((".", "-")) or os.path.isabs(source):
        return None
    if os.path.exists(source):  # a local folder, not an id
        return None
    return source


def is_local_path(text: str) -> bool:
    """Whether ``text`` names something on this machine (absolute, relative, home or drive path)."""
    return text.startswith(("/", ".", "~", "\\")) or (len(text) > 1 and text[1] == ":") or os.path.exists(text)


def base_name(path: str) -> str:
    """The last component of ``path`` (``path`` itself if it has none)."""
    return Path(path.rstrip("/\\")).name or path


def source_display(source: Any) -> Optional[str]:
    """The source model as the card and commit message name it: a Hub id as is, a local folder as
    ``NAME (local folder)``; None when there is no source."""
    if not source:
        return None
    if hub_model_id(source):
        return str(source)
    return f"{base_name(str(source))} (local folder)"
