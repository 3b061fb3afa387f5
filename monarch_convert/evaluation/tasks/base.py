"""What every task shares: the :class:`Task` hooks the evaluator calls (each task overrides the
ones where it differs), the :class:`Batch` and :class:`Options` they see, and the helpers of more
than one task (batching, tokenized text, classification heads)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ...errors import MonarchConvertError
from ..fidelity import kl_and_agreement

if TYPE_CHECKING:
    from ..options import DataOptions

# The model inputs a tokenizer gives that the evaluated models take.
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TaskOptions:
    """Options that only some tasks read."""

    # sentence embedding
    pooling: str
    normalize: bool
    # question answering
    doc_stride: int
    max_answer_length: int
    n_best: int
    # summarization
    max_new_tokens: int | None
    num_beams: int | None
    max_target_length: int


@dataclass(frozen=True)
class Options:
    """What a task reads while it runs."""

    batch_size: int
    max_length: int | None
    device: str
    dtype: Any  # the model's floating dtype, which inputs are cast to (None: leave them)
    metric_source: str
    extra_metrics: tuple[str, ...]
    seed: int | None
    task: TaskOptions


@dataclass
class Batch:
    index: int
    example_ids: list[int]  # positions in the evaluated sample
    build: Callable[[], dict]  # -> model inputs (CPU tensors)
    lengths: list[int]  # real tokens of each sequence the model sees (for attention FLOPs)
    extra: dict = field(default_factory=dict)


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[start : start + size]) for start in range(0, len(ids), size)]


def batches_by_length(lengths: list[int], batch_size: int, build: Callable[[list[int]], dict]) -> list[Batch]:
    """Examples by decreasing length (ties in order), so that a batch pads little; ``build(ids)``
    makes a batch's inputs when it runs."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [Batch(bi, ids, functools.partial(build, ids), [lengths[i] for i in ids])
            for bi, ids in enumerate(chunks(order, batch_size))]


def tokenized_batches(texts: list[str], tokenizer: Any, model: Any, opts: Options,
                      pairs: list[str] | None = None) -> list[Batch]:
    """Every example tokenized once (truncated, not padded), then :func:`batches_by_length`."""
    max_length = opts.max_length or default_max_length(tokenizer, model)
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    keys = [k for k in enc.keys() if k in TOKEN_INPUTS]

    def build(ids: list[int]) -> dict:
        feats = [{k: enc[k][i] for k in keys} for i in ids]
        return dict(tokenizer.pad(feats, padding=True, return_tensors="pt"))

    return batches_by_length([len(ids) for ids in enc["input_ids"]], opts.batch_size, build)


def default_max_length(tokenizer: Any, model: Any) -> int:
    """The tokenizer's maximum length, else the model's positions (512 if neither says)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is None or limit > 100_000:
        limit = getattr(model.config, "max_position_embeddings", None) or 512
    return int(limit)


def _auto_names(mapping_name: str) -> set[str]:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in getattr(modeling_auto, mapping_name).values():
        names.update(value if isinstance(value, (list, tuple)) else [value])
    return names


class Task:
    """One task: the model head it needs, the columns it reads, how it batches, what one forward
    pass returns (the timed part), how outputs become predictions and metrics, and how the
    converted model's outputs compare with the original's (no labels needed)."""

    name = ""
    description = ""  # its metrics, in words
    mapping: str | None = None  # transformers auto mapping whose classes have the task's head
    auto_class = "AutoModel"
    head = ""  # the head it needs, in words (for error messages)
    roles: dict[str, tuple[str, ...]] = {}  # column role -> column names looked for, in order
    required: tuple[str, ...] = ()  # roles without which the task cannot run
    text_roles: tuple[str, ...] = ()  # roles holding text the model reads or is scored on: no cell may be empty
    processor_kind = "tokenizer"  # or "image"

    # ------------------------------------------------------------------ model and preprocessor
    def load_model(self, path: str, dtype: Any, device: str) -> Any:
        import transformers
        from transformers.utils import logging as hf_logging

        auto = getattr(transformers, self.auto_class)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # missing head weights are reported below, in one line
        try:
            model, info = auto.from_pretrained(path, dtype=dtype if dtype is not None else "auto",
                                               output_loading_info=True)
        except (ValueError, KeyError) as exc:  # the config's model type has no class for this head
            raise MonarchConvertError(
                f"{path} cannot be loaded as a model with a {self.head} (task {self.name}): {str(exc).splitlines()[0]}"
            ) from exc
        except OSError as exc:
            raise MonarchConvertError(f"cannot load {path}: {str(exc).splitlines()[0]}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = [k for k in info.get("missing_keys", []) if self.is_head_key(k)]
        if missing:
            raise MonarchConvertError(
                f"{path} has no trained {self.head} for task {self.name} "
                f"(missing weights: {', '.join(sorted(missing)[:4])})"
            )
        return model.to(device).eval()

    def adopt_model(self, model: Any) -> Any:
        """The model to evaluate, given a model object (the task may keep what wraps it)."""
        return model

    def is_head_key(self, key: str) -> bool:
        """Whether a weight missing from the checkpoint belongs to the task's head."""
        return True

    def check_model(self, model) -> None:
        if self.mapping is None:
            return
        if type(model).__name__ not in _auto_names(self.mapping):
            raise MonarchConvertError(
                f"{type(model).__name__} has no {self.head}, which task {self.name} needs "
                f"(load the model with transformers.{self.auto_class})"
            )

    def load_processor(self, path: str | None, given):
        if given is not None:
            return given
        if path is None:
            raise MonarchConvertError(
                f"task {self.name} needs a {'tokenizer' if self.processor_kind == 'tokenizer' else 'image processor'}: "
                "pass processor=... with a model object"
            )
        from transformers import AutoImageProcessor, AutoTokenizer

        auto = AutoTokenizer if self.processor_kind == "tokenizer" else AutoImageProcessor
        try:
            return auto.from_pretrained(path)
        except Exception as exc:
            first = str(exc).splitlines()[0]
            raise MonarchConvertError(f"could not load the {self.processor_kind} of {path}: {first}") from exc

    # ------------------------------------------------------------------------------ data
    def hold_out(self, ds, cols: dict[str, str], data: DataOptions) -> list[int]:
        """The indices of ``ds`` left to sample the evaluated examples from, once the task has
        taken what it needs for itself."""
        return list(range(len(ds)))

    def references(self, ds, cols: dict[str, str], model) -> list:
        return [None] * len(ds)

    def make_batches(self, ds, cols: dict[str, str], processor, model, opts: Options) -> list[Batch]:
        raise NotImplementedError

    # --------------------------------------------------------------------------- running
    def prepare(self, predict: Callable[[Any, str], list], opts: Options) -> None:
        """Work done once with the original model before the evaluation; ``predict(ds, desc)``
        gives its predictions on any examples."""

    def forward(self, model, batch: Batch, inputs: dict, opts: Options) -> dict:
        raise NotImplementedError

    def predictions(self, batch: Batch, outputs: dict, opts: Options) -> list:
        raise NotImplementedError

    def output_fidelity(self, batch: Batch, inputs: dict, ref_out: dict, new_out: dict, model,
                        opts: Options) -> dict[str, tuple[float, int]]:
        """{name: (sum, count)} accumulated over batches; reported as sum / count. ``model`` is
        the converted model."""
        raise NotImplementedError

    # ----------------------------------------------------------------- metrics and report
    def compute_metrics(self, predictions: list, references: list, opts: Options) -> dict[str, tuple[float, str]]:
        raise NotImplementedError

    def keep_original(self, predictions: list) -> None:
        """The original model's predictions, once its own metrics are computed."""

    def extra_metric_inputs(self, predictions: list, references: list) -> tuple[list, list]:
        """(predictions, references) as a Hub ``evaluate`` metric takes them."""
        raise MonarchConvertError(f"extra metrics are not available for task {self.name}")

    def report_fields(self, data: DataOptions, opts: Options) -> dict[str, Any]:
        """Task-specific entries of the report."""
        return {}


class ClassificationTask(Task):
    """A head that scores classes: labels are class indices or names in the model's ``label2id``;
    outputs compare by KL divergence and top-1 agreement of the logits."""

    def references(self, ds: Any, cols: dict[str, str], model: Any) -> list:
        labels = ds[cols["label"]]
        return [self._label_id(lab, model, ds.features.get(cols["label"])) for lab in labels]

    def _label_id(self, label, model, feature) -> int:
        num = model.config.num_labels
        named = feature is not None and hasattr(feature, "names")
        if isinstance(label, str) or named:
            name = feature.int2str(label) if named and not isinstance(label, str) else label
            l2i = {str(k).lower(): v for k, v in (model.config.label2id or {}).items()}
            if str(name).lower() in l2i:
                return int(l2i[str(name).lower()])
            if isinstance(label, str):
                if label.lstrip("-").isdigit() and 0 <= int(label) < num:
                    return int(label)
                names = ", ".join(map(str, (model.config.label2id or {}).keys()))
                raise MonarchConvertError(f"label {label!r} is not one of the model's labels ({names})")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num:
            raise MonarchConvertError(f"label {label!r} is not a class index of the model (0..{num - 1})")
        return int(label)

    def predictions(self, batch: Batch, outputs: dict, opts: Options) -> list:
        return list(outputs["logits"])

    def output_fidelity(self, batch: Batch, inputs: dict, ref_out: dict, new_out: dict, model: Any,
                        opts: Options) -> dict[str, tuple[float, int]]:
        kl, agree, n = kl_and_agreement(ref_out["logits"], new_out["logits"])
        return {"kl": (kl, n), "top1_agreement": (100.0 * agree, n)}

    def extra_metric_inputs(self, predictions: list, references: list) -> tuple[list, list]:
        return [int(p.argmax()) for p in predictions], references
