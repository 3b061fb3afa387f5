"""Data for the evaluator, always through ``datasets``: a Hub dataset, local files (csv, tsv, json,
jsonl, parquet, image folders, ``save_to_disk`` folders), or a ``datasets.Dataset`` object; then a
deterministic sample and the column each task role reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import MonarchConvertError

_FILE_BUILDERS = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
    ".txt": "text", ".arrow": "arrow",
}
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


def _builder_for_dir(path: Path) -> tuple[str, dict[str, Any]]:
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    suffixes = {p.suffix.lower() for p in files}
    if suffixes & _IMAGE_SUFFIXES:
        return "imagefolder", {"data_dir": str(path)}
    for suffix, builder in _FILE_BUILDERS.items():
        matching = [str(p) for p in files if p.suffix.lower() == suffix]
        if matching:
            return builder, {"data_files": sorted(matching)}
    raise MonarchConvertError(f"no csv, json, parquet or image files under {path}")


def load_data(
    dataset: Any,
    *,
    dataset_config: str | None = None,
    split: str | None = None,
) -> "datasets.Dataset":  # noqa: F821
    """A ``datasets.Dataset`` from a Dataset/DatasetDict object, a local file or folder, or a Hub
    name (with ``dataset_config`` and ``split``; default split: test, then validation, then train)."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        return dataset
    if isinstance(dataset, datasets.DatasetDict):
        return _pick_split(dataset, split, "the DatasetDict")
    if not isinstance(dataset, (str, Path)) or not str(dataset):
        raise MonarchConvertError(
            f"dataset must be a Hub name, a local path or a datasets.Dataset, got {type(dataset).__name__}"
        )
    path = Path(dataset).expanduser()
    try:
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix not in _FILE_BUILDERS:
                raise MonarchConvertError(f"unsupported data file {path.name} (use csv, tsv, json, jsonl or parquet)")
            kwargs: dict[str, Any] = {"data_files": str(path)}
            if suffix == ".tsv":
                kwargs["delimiter"] = "\t"
            dd = datasets.load_dataset(_FILE_BUILDERS[suffix], **kwargs)
            return _pick_split(dd, None, str(path))
        if path.is_dir():
            if any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
                loaded = datasets.load_from_disk(str(path))
                return loaded if isinstance(loaded, datasets.Dataset) else _pick_split(loaded, split, str(path))
            builder, kwargs = _builder_for_dir(path)
            return _pick_split(datasets.load_dataset(builder, **kwargs), split, str(path))
        if str(dataset).startswith((".", "/", "~")):
            raise MonarchConvertError(f"dataset path {dataset} does not exist")
        dd = datasets.load_dataset(str(dataset), dataset_config, split=split) if split else datasets.load_dataset(
            str(dataset), dataset_config
        )
        return dd if isinstance(dd, datasets.Dataset) else _pick_split(dd, split, str(dataset))
    except MonarchConvertError:
        raise
    except Exception as exc:  # datasets raises many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MonarchConvertError(f"could not load dataset {dataset!s}: {first}") from exc


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
