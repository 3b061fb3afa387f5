"""The calibration data as batches of model inputs, cut (seeded) into a fitted and a held-out part.

``data`` is what the evaluator reads (a ``datasets.Dataset``, a local file or folder, a Hub id:
``evaluation.data.load_data``, with the same column look-up), or a plain list of texts or images.
Texts are tokenized with the model's tokenizer, truncated to the calibration length; images go
through the model's image processor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..errors import MonarchConvertError
from ..evaluation.data import check_text_cells, load_data, resolve_columns, sample_indices, split_indices
from ..evaluation.tasks import get_task
from ..evaluation.tasks.base import TOKEN_INPUTS, batches_by_length, chunks

HELD_OUT_FRACTION = 0.25


@dataclass(frozen=True)
class CalibrationData:
    """Batches (model inputs, CPU tensors) of the fitted and held-out parts."""

    fit: list[dict]
    held_out: list[dict]
    fit_examples: int
    held_out_examples: int


# What the models of a patcher take (its ``dummy_inputs``), for those calibration cannot read yet.
UNREAD_INPUTS = {"video": "video clips", "spectrogram": "audio spectrograms", "speech_features": "log-mel features",
                 "waveform": "audio waveforms", "image_and_text": "images and texts together"}


def check_readable(patch: Any, doing: str = "calibrate", done: str = "calibrated",
                   instead: str = "set its settings per layer by hand (--layer-settings)") -> None:
    """A one-line error for a model whose inputs calibration and healing do not read (they read
    texts and images only)."""
    what = UNREAD_INPUTS.get(getattr(patch.dummy_inputs, "__name__", ""))
    if what is None:
        return
    hint = f" (its image tower alone, {patch.model_type}_vision_model, can be)" if what.startswith("images and") else ""
    raise MonarchConvertError(f"{doing} reads texts or images, and a {patch.model_type} model takes {what}: it "
                              f"cannot be {done} yet{hint}; {instead}")


def is_vision(model: Any) -> bool:
    return hasattr(model.config, "image_size") and hasattr(model.config, "patch_size")


def load_processor(model: Any, given: Any) -> Any:
    """``given``, else the model's own tokenizer or image processor (from ``config.name_or_path``)."""
    task = get_task("image-classification" if is_vision(model) else "sentence-embedding")
    return task.load_processor(getattr(model.config, "name_or_path", None) or None, given)


def _items(model: Any, data: Any) -> list:
    """The texts or images of ``data``."""
    if isinstance(data, (list, tuple)):
        return list(data)
    ds = load_data(data)
    task = get_task("image-classification" if is_vision(model) else "sentence-embedding")
    role = "image" if is_vision(model) else "text"
    cols = resolve_columns(ds, {role: task.roles[role]}, (role,), None, "calibrate")
    if role == "text":
        check_text_cells(ds, cols, ("text",), "the calibration data")
    return list(ds[cols[role]])


def prepare(model: Any, data: Any, processor: Any, samples: int, seq_len: int, batch_size: int,
            seed: int = 0) -> CalibrationData:
    """``samples`` examples of ``data`` (seeded), 3/4 fitted and 1/4 held out, batched."""
    items = _items(model, data)
    picked = sample_indices(len(items), samples, seed)
    if len(picked) < 4:
        raise MonarchConvertError(
            f"calibration needs at least 4 examples (a fitted and a held-out part), got {len(picked)}")
    fit, held_out = split_indices(picked, 1 - HELD_OUT_FRACTION, seed)
    make = _image_batches if is_vision(model) else _text_batches
    batches = [[build() for build in make([items[i] for i in part], processor, model, seq_len, batch_size)]
               for part in (fit, held_out)]
    return CalibrationData(batches[0], batches[1], len(fit), len(held_out))


def _text_batches(texts: list, tokenizer: Any, model: Any, seq_len: int, batch_size: int) -> list:
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise MonarchConvertError("calibration texts must be non-empty strings")
    enc = tokenizer(texts, truncation=True, max_length=seq_len)
    keys = [k for k in enc.keys() if k in TOKEN_INPUTS]

    def build(ids: list[int]) -> dict:
        return dict(tokenizer.pad([{k: enc[k][i] for k in keys} for i in ids], padding=True, return_tensors="pt"))

    return [b.build for b in batches_by_length([len(x) for x in enc["input_ids"]], batch_size, build)]


def _image_batches(images: list, processor: Any, model: Any, seq_len: int, batch_size: int) -> list:
    from ..evaluation.tasks.image_classification import _as_image

    mode = "L" if getattr(model.config, "num_channels", 3) == 1 else "RGB"

    def build(ids: list[int]) -> dict:
        pixels = processor(images=[_as_image(images[i]).convert(mode) for i in ids], return_tensors="pt")
        return {"pixel_values": pixels["pixel_values"]}

    return [functools.partial(build, ids) for ids in chunks(range(len(images)), batch_size)]
