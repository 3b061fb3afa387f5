"""The source's tokenizer or image processor, for ``monarch-convert`` to write beside the weights:
only what the source has.

transformers builds a tokenizer from ``config.json`` alone when a folder has no tokenizer files
(a BERT one with its 5 special tokens and nothing else); copied into DIR it would look like the
model's. So a loaded preprocessor counts only when the source holds one of its files.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from .errors import MonarchConvertError
from .loading import failure_reason

# (kind, files whose presence says the source has one); the tokenizer class adds its vocabulary files.
_KINDS = (
    ("tokenizer", ("tokenizer_config.json", "tokenizer.json")),
    ("image processor", ("preprocessor_config.json",)),
)


def load_preprocessor(source: str) -> Any:
    """The source's tokenizer, else its image processor, or None if it has neither.
    Raises :class:`MonarchConvertError` when the source has one that cannot be loaded."""
    from transformers import AutoImageProcessor, AutoTokenizer

    for auto, (kind, markers) in zip((AutoTokenizer, AutoImageProcessor), _KINDS):
        loaded = _load(auto, source, kind, markers)
        if loaded is not None:
            return loaded
    return None


def _load(auto: Any, source: str, kind: str, markers: tuple[str, ...]) -> Optional[Any]:
    try:
        loaded = auto.from_pretrained(source)
    except Exception as e:  # any failure means "none of that kind", unless the source has its files
        if _source_has(source, markers):
            raise MonarchConvertError(f"cannot load the {kind} of {source}: {failure_reason(e)}") from e
        return None
    vocabulary = getattr(type(loaded), "vocab_files_names", None) or {}
    return loaded if _source_has(source, (*markers, *vocabulary.values())) else None


def _source_has(source: str, names: Iterable[str]) -> bool:
    """Whether the folder or Hub repo ``source`` has one of the files ``names`` (a Hub repo's are in
    the local cache by now: loading just fetched them)."""
    if os.path.isdir(source):
        return any(os.path.isfile(os.path.join(source, name)) for name in names)
    from transformers.utils import cached_file

    return any(
        cached_file(
            source, name, _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False
        )
        for name in names
    )


def describe(preprocessor: Any, files: list[str]) -> str:
    """The summary line of what was written beside the weights."""
    if preprocessor is None:
        return "The source has no tokenizer or image processor: none written"
    return f"Wrote the source's {type(preprocessor).__name__}: {', '.join(sorted(files))}"
