"""Data for the evaluator, always through ``datasets``: a Hub dataset, local files (csv, tsv, json,
jsonl, parquet, image folders, ``save_to_disk`` folders), or a ``datasets.Dataset`` object; then a
deterministic sample and the column each task role reads."""

from __future__ import annotations

import codecs
import contextlib
import itertools
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import MonarchConvertError

_FILE_BUILDERS = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
    ".txt": "text", ".arrow": "arrow",
}
# Builders that read text, which datasets decodes as UTF-8.
_TEXT_BUILDERS = {"csv", "json", "text"}
# How datasets says that a split has no rows (a csv with only a header, a json "[]").
_NO_ROWS = "corresponds to no data"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _pick_split(dd, split: str | None, what: str):
    if split is not None:
        if split not in dd:
            raise MonarchConvertError(f"split {split!r} not in {what} (splits: {', '.join(dd)})")
        return dd[split]
    for name in ("test", "validation", "train"):
        if name in dd:
            return dd[name]
    return dd[next(iter(dd))]


def _builder_for_dir(path: Path) -> tuple[str, dict[str, Any], list[Path]]:
    """The ``datasets`` builder for a folder, its arguments, and the data files it reads (none
    listed for an image folder: its files are not text)."""
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    suffixes = {p.suffix.lower() for p in files}
    if suffixes & _IMAGE_SUFFIXES:
        return "imagefolder", {"data_dir": str(path)}, []
    for suffix, builder in _FILE_BUILDERS.items():
        matching = sorted(p for p in files if p.suffix.lower() == suffix)
        if matching:
            return builder, {"data_files": [str(p) for p in matching]}, matching
    raise MonarchConvertError(f"no csv, json, parquet or image files under {path}")


def _builder_for_file(path: Path, shown: str) -> tuple[str, dict[str, Any], list[Path]]:
    suffix = path.suffix.lower()
    if suffix not in _FILE_BUILDERS:
        raise MonarchConvertError(f"unsupported data file {shown} (use csv, tsv, json, jsonl or parquet)")
    kwargs: dict[str, Any] = {"data_files": str(path)}
    if suffix == ".tsv":
        kwargs["delimiter"] = "\t"
    return _FILE_BUILDERS[suffix], kwargs, [path]


def _looks_like_path(text: str) -> bool:
    """Whether a dataset that does not exist was meant as a local path rather than a Hub id: it
    names a data file (Hub ids have no such extension) or starts the way only paths do."""
    return (Path(text).suffix.lower() in _FILE_BUILDERS or text in (".", "..")
            or text.startswith(("./", "../", "/", "~")))


def _scan_text(path: Path) -> tuple[bool, tuple[int, int] | None]:
    """(whether the file holds anything but white space, (value, offset) of its first byte that
    is not UTF-8, or None). One pass in 1 MiB chunks; the decoder carries a sequence cut by a
    chunk's end over to the next chunk."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, content = 0, False
    with open(path, "rb") as f:
        for chunk in itertools.chain(iter(lambda: f.read(1 << 20), b""), [None]):  # None: the end
            pending = len(decoder.getstate()[0])  # bytes of a cut sequence, decoded with ``chunk``
            try:
                decoder.decode(chunk or b"", final=chunk is None)
            except UnicodeDecodeError as exc:
                return content, (exc.object[exc.start], offset - pending + exc.start)
            if chunk is not None:
                content = content or bool(chunk.strip())
                offset += len(chunk)
    return content, None


def _check_files(files: list[Path], shown: Callable[[Path], str]) -> None:
    """Refuse an empty data file, or a text one (csv, json, txt) that is not UTF-8, in one line
    that names it and, for bad bytes, where they are: ``datasets`` says of an empty or non-UTF-8
    csv only 'An error occurred while generating the dataset' (the cause on a log line of its
    own, with an offset into some buffer), and loads non-UTF-8 json as strings that fail later."""
    for path in files:
        if _FILE_BUILDERS.get(path.suffix.lower()) not in _TEXT_BUILDERS:
            if path.stat().st_size == 0:
                raise MonarchConvertError(f"{shown(path)} is empty")
            continue
        content, bad = _scan_text(path)
        if bad is not None:
            value, offset = bad
            raise MonarchConvertError(f"cannot read {shown(path)}: not UTF-8 (byte 0x{value:02x} at offset {offset})")
        if not content:
            raise MonarchConvertError(f"{shown(path)} is empty")


@contextlib.contextmanager
def _reading(shown: str, what: str):
    """Any error of ``datasets`` while it loads ``shown`` as one line, ``what: cause`` (the error
    ``datasets`` wraps a reader's in says only that generating the dataset failed). ``datasets``
    also logs such errors on a line of its own: not while this runs."""
    from datasets.utils import logging as ds_logging

    verbosity = ds_logging.get_verbosity()
    ds_logging.set_verbosity(max(verbosity, ds_logging.ERROR + 1))  # its errors become the one line below
    try:
        yield
    except MonarchConvertError:
        raise
    except Exception as exc:  # datasets, pandas and pyarrow raise many kinds
        cause = exc
        while type(cause).__name__ == "DatasetGenerationError" and cause.__cause__ is not None:
            cause = cause.__cause__
        if _NO_ROWS in str(cause):
            raise MonarchConvertError(f"{shown} is empty: no rows") from exc
        if isinstance(cause, OSError) and cause.strerror:
            raise MonarchConvertError(f"{what}: {cause.strerror.lower()}") from exc
        raise MonarchConvertError(f"{what}: {_first_line(cause)}") from exc
    finally:
        ds_logging.set_verbosity(verbosity)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_local(path: Path, shown: str, split: str | None) -> "datasets.Dataset":  # noqa: F821
    """A local file (its one split) or folder: a ``save_to_disk`` folder, an image folder, or
    data files of one format."""
    import datasets

    with _reading(shown, f"cannot read {shown}"):
        if path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "dataset_dict.json",
                                                                "state.json")):
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.Dataset) else _pick_split(loaded, split, shown)
        if path.is_dir():
            builder, kwargs, files = _builder_for_dir(path)
            _check_files(files, lambda f: os.path.join(shown, str(f.relative_to(path))))
        elif path.is_file():
            builder, kwargs, files = _builder_for_file(path, shown)
            _check_files(files, lambda f: shown)
            split = None  # a file is one split, whatever datasets names it
        else:
            raise MonarchConvertError(f"cannot read {shown}: not a file or folder")
        return _pick_split(datasets.load_dataset(builder, **kwargs), split, shown)


def load_data(
    dataset: Any,
    *,
    dataset_config: str | None = None,
    split: str | None = None,
) -> "datasets.Dataset":  # noqa: F821
    """A ``datasets.Dataset`` from a Dataset/DatasetDict object, a local file or folder, or a Hub
    name (with ``dataset_config`` and ``split``; default split: test, then validation, then train).
    A name that does not exist locally but looks like a path is a missing file, not a Hub id."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        return dataset
    if isinstance(dataset, datasets.DatasetDict):
        return _pick_split(dataset, split, "the DatasetDict")
    if not isinstance(dataset, (str, Path)) or not str(dataset):
        raise MonarchConvertError(
            f"dataset must be a Hub name, a local path or a datasets.Dataset, got {type(dataset).__name__}"
        )
    shown = str(dataset)
    path = Path(dataset).expanduser()
    if path.exists():
        return _load_local(path, shown, split)
    if isinstance(dataset, Path) or _looks_like_path(shown):
        what = "file" if path.suffix.lower() in _FILE_BUILDERS else "file or folder"
        raise MonarchConvertError(f"no such {what}: {shown}")
    with _reading(shown, f"could not load dataset {shown}"):
        dd = datasets.load_dataset(shown, dataset_config, **({"split": split} if split else {}))
        return dd if isinstance(dd, datasets.Dataset) else _pick_split(dd, split, shown)


def sample_indices(n: int, samples: int | None, seed: int | None) -> list[int]:
    """``samples`` indices out of ``n``, in increasing order: a seeded random subset, or the first
    ``samples`` when ``seed`` is None; everything when ``samples`` is None or >= n."""
    import numpy as np

    if samples is not None and samples < 1:
        raise MonarchConvertError(f"samples must be >= 1, got {samples}")
    if samples is None or samples >= n:
        return list(range(n))
    if seed is None:
        return list(range(samples))
    return sorted(np.random.default_rng(seed).choice(n, size=samples, replace=False).tolist())


def split_indices(indices: Sequence[int], fraction: float, seed: int | None) -> tuple[list[int], list[int]]:
    """Split ``indices`` into (first part with ``fraction`` of them, rest), seeded, both sorted."""
    import numpy as np

    if not 0 < fraction < 1:
        raise MonarchConvertError(f"probe train fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(0 if seed is None else seed).permutation(len(indices))
    cut = int(round(fraction * len(indices)))
    if cut < 1 or cut >= len(indices):
        raise MonarchConvertError(
            f"cannot split {len(indices)} examples into a probe train part and an evaluation part"
        )
    first = sorted(indices[i] for i in order[:cut])
    rest = sorted(indices[i] for i in order[cut:])
    return first, rest


def resolve_columns(
    ds: Any,
    roles: Mapping[str, Sequence[str]],
    required: Sequence[str],
    given: Mapping[str, str] | None,
    task: str,
) -> dict[str, str]:
    """Map each task role (text, label, image, ...) to a column: the user's choice, else the first
    candidate name present. Unknown roles and missing columns are one-line errors."""
    given = dict(given or {})
    unknown = set(given) - set(roles)
    if unknown:
        raise MonarchConvertError(
            f"unknown column role(s) for task {task}: {', '.join(sorted(unknown))} (roles: {', '.join(roles)})"
        )
    names = list(ds.column_names)
    out: dict[str, str] = {}
    for role, candidates in roles.items():
        if role in given:
            if given[role] not in names:
                raise MonarchConvertError(
                    f"column {given[role]!r} (for {role}) not in the dataset (columns: {', '.join(names)})"
                )
            out[role] = given[role]
            continue
        lowered = {c.lower(): c for c in names}
        for cand in candidates:
            if cand.lower() in lowered:
                out[role] = lowered[cand.lower()]
                break
        else:
            if role in required:
                raise MonarchConvertError(
                    f"task {task} needs a {role} column: none of {', '.join(candidates)} in the dataset "
                    f"(columns: {', '.join(names)}); name it with --column {role}=NAME"
                )
    return out


def blank_rows(ds: Any, column: str) -> list[int]:
    """The rows of ``ds`` whose ``column`` is missing, or text with nothing but white space.
    Computed in Arrow (no Python objects per row), on the rows ``ds`` selects."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = ds.with_format("arrow")[column]
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
    else:
        blank = pc.is_null(values)
    return np.flatnonzero(blank.to_numpy(zero_copy_only=False)).tolist()


def check_text_cells(ds: Any, columns: Mapping[str, str], roles: Sequence[str], where: str) -> None:
    """Refuse empty cells in the text columns of ``roles``, in one line with the first rows and
    the count. ``datasets`` reads an empty csv cell as None, which a task would evaluate as the
    text "None"; skipping such rows instead would make the evaluated sample differ from the one
    asked for, unseen by anyone reading only the metrics."""
    for role in roles:
        if role not in columns:
            continue
        rows = blank_rows(ds, columns[role])
        if rows:
            listed = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
            raise MonarchConvertError(
                f"{where}: column {columns[role]!r} ({role}) is empty in {len(rows)} of {len(ds)} rows: {listed} "
                "(row 0 = the first example); fill or drop them"
            )
