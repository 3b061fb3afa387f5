"""Markdown pieces of the model card: tables, and the cells' numbers and layer ranges."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def cell(value: Any) -> str:
    """``value`` as one table cell: on one line, with ``|`` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table; the cells are written as given (escape them with :func:`cell`)."""
    lines = [_row(header), "|" + "---|" * len(header)]
    lines += [_row(row) for row in rows]
    return lines


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_number(value: Any, *, signed: bool = False) -> str:
    """A metric value: 2 decimals from 1 up, 4 below (accuracies in [0, 1]); ``-`` if missing."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        if value != value:  # NaN
            return "nan"
        digits = 2 if abs(value) >= 1 else 4
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def format_layers(layers: Any) -> str:
    """Layer indices as ranges: ``[0, 1, 2, 3, 8]`` -> ``0-3, 8``; a string (``all``) as is."""
    if layers is None:
        return "-"
    if isinstance(layers, str):
        return layers
    try:
        values = sorted({int(x) for x in layers})
    except (TypeError, ValueError):
        return str(layers)
    if not values:
        return "none"
    runs, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(runs)


def format_setting(key: str, value: Any) -> Any:
    """A conversion setting's value as the card shows it (``layers`` as ranges, ``layer_settings``
    as ``--layer-settings`` writes them)."""
    if key == "layer_settings" and isinstance(value, dict):
        short = {"block_size": "b", "num_steps": "T", "global_keys": "G"}
        return "; ".join(f"{layer}: " + ",".join("diag" if k == "exact_diagonal" and v else f"{short.get(k, k)}={v}"
                                                 for k, v in own.items()) for layer, own in value.items()) or "-"
    return format_layers(value) if key == "layers" else value
