"""Progress bars: the evaluator's own, and silencing those of the libraries it calls."""

from __future__ import annotations

from typing import Iterable


def progress_bar(items: Iterable, desc: str, enabled: bool) -> Iterable:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not enabled, leave=False, unit="batch")


def quiet_libraries() -> None:
    """No progress bars from transformers (weight loading) and datasets either."""
    try:
        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
    except Exception:  # a missing or changed library only means the bars stay
        pass
