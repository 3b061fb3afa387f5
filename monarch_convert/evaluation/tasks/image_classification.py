"""Image classification: top-1 / top-5 accuracy of an ``AutoModelForImageClassification``."""

from __future__ import annotations

import functools
from typing import Any

from ..metrics import classification_metrics
from .base import Batch, ClassificationTask, Options, chunks


class ImageClassification(ClassificationTask):
    name = "image-classification"
    description = "top-1 / top-5 accuracy"
    mapping = "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"
    auto_class = "AutoModelForImageClassification"
    head = "image-classification head"
    roles = {"image": ("image", "img", "pixel_values", "picture"), "label": ("label", "labels", "fine_label", "class")}
    required = ("image", "label")
    processor_kind = "image"

    def is_head_key(self, key: str) -> bool:
        return key.startswith(("classifier", "head", "fc"))

    def make_batches(self, ds: Any, cols: dict[str, str], processor: Any, model: Any, opts: Options) -> list[Batch]:
        mode = "L" if getattr(model.config, "num_channels", 3) == 1 else "RGB"
        seq = _vision_seq_len(model)

        def build(ids: list[int]) -> dict:
            images = [_as_image(item).convert(mode) for item in ds.select(ids)[cols["image"]]]
            return {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}

        return [Batch(bi, ids, functools.partial(build, ids), [seq] * len(ids))
                for bi, ids in enumerate(chunks(range(len(ds)), opts.batch_size))]

    def forward(self, model: Any, batch: Batch, inputs: dict, opts: Options) -> dict:
        return {"logits": model(pixel_values=inputs["pixel_values"]).logits.float().cpu()}

    def compute_metrics(self, predictions: list, references: list, opts: Options) -> dict[str, tuple[float, str]]:
        import torch

        return classification_metrics(torch.stack(predictions), references, top_k=(1, 5), source=opts.metric_source)


def _as_image(item):
    """A PIL image from a path, a PIL image or an array of pixels."""
    from PIL import Image

    if isinstance(item, str):
        return Image.open(item)
    if not isinstance(item, Image.Image):
        import numpy as np

        return Image.fromarray(np.asarray(item, dtype="uint8"))
    return item


def _vision_seq_len(model) -> int:
    """Tokens a ViT-like model sees: the patches, the class token and DeiT's distillation token."""
    cfg = model.config
    size, patch = getattr(cfg, "image_size", None), getattr(cfg, "patch_size", None)
    if isinstance(size, int) and isinstance(patch, int):
        extra = 1 + (1 if "distill" in type(model).__name__.lower() or getattr(cfg, "model_type", "") == "deit" else 0)
        return (size // patch) ** 2 + extra
    return 1
