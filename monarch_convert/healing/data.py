"""What healing trains and measures on: texts or images, unlabelled, in a fixed order.

Data come as the evaluator takes them (``evaluation.data.load_data``: a ``datasets.Dataset``, a
local file or folder, a Hub name), or as a plain list of texts or images. The model's tokenizer or
image processor turns a batch into inputs when the batch runs. The order is a function of the
seed and the step alone (epoch ``e`` is the permutation seeded ``seed + e``), so that a run
resumed at step ``s`` sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import MonarchConvertError

# Column names looked for, in order, as the evaluator's tasks look for them.
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document")
IMAGE_COLUMNS = ("image", "img", "pixel_values", "picture")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class HealData:
    """Examples of one kind ("text" or "image") and how a batch of them becomes model inputs."""

    kind: str
    source: Any  # a datasets.Dataset or a list
    column: str | None  # the Dataset's column; None for a list
    processor: Any
    max_length: int | None  # text: tokens kept per example
    image_mode: str = "RGB"

    def __len__(self) -> int:
        return len(self.source)

    def values(self, ids: Sequence[int]) -> list:
        if self.column is None:
            return [self.source[i] for i in ids]
        return list(self.source.select(list(ids))[self.column])

    def inputs(self, ids: Sequence[int]) -> dict:
        """The model inputs of examples ``ids`` (CPU tensors; text padded to the longest)."""
        if self.kind == "text":
            import torch

            # NumPy arrays, then shared as tensors: the tokenizer's torch.tensor() of Python lists holds
            # the interpreter lock, and heal tokenises on a worker beside a host-bound step that waits
            # for it at every op. At 4,096 tokens a host-bound thread beside it waited 2.1 ms a batch with
            # "pt", 0.85 ms with "np" (docs/benchmarks-log.md, fourth H100 round of 2026-12-07).
            return {k: torch.from_numpy(v) for k, v in self.tokenised(ids, "np").items()}
        from ..evaluation.tasks.image_classification import _as_image

        images = [_as_image(item).convert(self.image_mode) for item in self.values(ids)]
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"]}

    def tokenised(self, ids: Sequence[int], tensors: str) -> dict:
        """The token inputs of text examples ``ids`` as the tokenizer returns them in ``tensors``
        ("np" or "pt"), padded to the longest."""
        enc = self.processor([str(t) for t in self.values(ids)], truncation=True, max_length=self.max_length,
                             padding=True, return_tensors=tensors)
        return {k: v for k, v in enc.items() if k in TOKEN_INPUTS}

    def subset(self, ids: Sequence[int]) -> HealData:
        if self.column is None:
            return HealData(self.kind, [self.source[i] for i in ids], None, self.processor, self.max_length,
                            self.image_mode)
        return HealData(self.kind, self.source.select(list(ids)), self.column, self.processor, self.max_length,
                        self.image_mode)


def is_tokenizer(processor: Any) -> bool:
    from transformers import PreTrainedTokenizerBase

    return isinstance(processor, PreTrainedTokenizerBase)


def heal_data(data: Any, processor: Any, model: Any, *, column: str | None = None,
              max_length: int | None = None, what: str = "data") -> HealData:
    """``data`` as :class:`HealData` for ``model`` and its ``processor``; one-line errors for
    anything that cannot be used."""
    if processor is None:
        raise MonarchConvertError("healing needs the model's tokenizer or image processor: pass processor=...")
    kind = "text" if is_tokenizer(processor) else "image"
    mode = "L" if getattr(model.config, "num_channels", 3) == 1 else "RGB"
    if kind == "text" and max_length is None:
        from ..evaluation.tasks.base import default_max_length

        max_length = default_max_length(processor, model)
    if isinstance(data, (list, tuple)):
        if not data:
            raise MonarchConvertError(f"the {what} is empty: nothing to heal on")
        if kind == "text" and not all(isinstance(t, str) and t.strip() for t in data):
            raise MonarchConvertError(f"the {what} must be a list of non-empty texts for a model with a tokenizer")
        return HealData(kind, list(data), None, processor, max_length, mode)
    from ..evaluation.data import check_text_cells, load_data, resolve_columns

    ds = load_data(data)
    if len(ds) == 0:
        raise MonarchConvertError(f"the {what} is empty: nothing to heal on")
    role = kind
    roles = {role: TEXT_COLUMNS if kind == "text" else IMAGE_COLUMNS}
    cols = resolve_columns(ds, roles, (role,), {role: column} if column else None, f"heal ({kind} model)")
    if kind == "text":
        check_text_cells(ds, cols, ("text",), f"the {what}")
    return HealData(kind, ds, cols[role], processor, max_length, mode)


def split_held_out(data: HealData, samples: int, seed: int) -> tuple[HealData, HealData]:
    """(training part, held-out part of ``samples`` examples, at most a fifth of ``data``), seeded."""
    from ..evaluation.data import split_indices

    if len(data) < 2:
        raise MonarchConvertError("healing needs at least 2 examples (one to train on, one held out), or eval_data")
    fraction = min(samples, max(1, len(data) // 5)) / len(data)
    held_out, train = split_indices(list(range(len(data))), fraction, seed)
    return data.subset(train), data.subset(held_out)


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int) -> tuple[int, ...]:
    import numpy as np

    return tuple(np.random.default_rng(seed).permutation(n).tolist())


def step_indices(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """The examples of step ``step`` (0-based): positions ``step * batch_size ...`` of the
    stream made of one seeded permutation of the ``n`` examples per epoch."""
    ids = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n)
        ids.append(_permutation(n, seed + epoch)[offset])
    return ids
