"""Sentence embedding: cosine to the original model's embeddings and, where the data has labels,
the accuracy of a linear probe fitted on the original's embeddings of a held-out train part.

A sentence-transformers folder or Hub repo (one with ``modules.json``, e.g. written by
``monarch-convert``) is loaded as a ``SentenceTransformer``: its transformer is the model that is
converted and evaluated, and embeddings come from the folder's own modules (pooling, dense,
normalisation; ``pooling`` and ``normalize`` are not used), its tokenizer and its ``max_seq_length``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from ...errors import MonarchConvertError
from ..data import check_text_cells, load_data, sample_indices, split_indices
from ..metrics import fit_linear_probe, probe_accuracy
from .base import TOKEN_INPUTS, Batch, Options, Task, tokenized_batches

if TYPE_CHECKING:
    from ..options import DataOptions


class SentenceEmbedding(Task):
    name = "sentence-embedding"
    description = "cosine to the original's embeddings; linear-probe accuracy"
    auto_class = "AutoModel"
    head = "encoder"
    roles = {"text": ("text", "sentence", "content", "review", "document"), "label": ("label", "labels", "class")}
    required = ("text",)
    text_roles = ("text",)

    def __init__(self) -> None:
        self.probe_train = None  # the examples the probe is fitted on (data with labels only)
        self.probe_labels: list = []
        self.probe = None
        self.original_embeddings = None
        self.st_model = None  # the SentenceTransformer of a sentence-transformers folder

    def load_model(self, path: str, dtype: Any, device: str) -> Any:
        from ... import sentence_transformers as st_models

        if not (st_models.is_source(path) and st_models.available()):
            return super().load_model(path, dtype, device)
        return self.adopt_model(st_models.load(path, device=device, dtype=dtype)).eval()

    def adopt_model(self, model: Any) -> Any:
        """A SentenceTransformer's transformer (kept with the SentenceTransformer, whose modules
        embed); any other model as it is."""
        from ... import sentence_transformers as st_models

        if not st_models.is_sentence_transformer(model):
            return model
        transformer = st_models.single_transformer(model)
        self.st_model = model
        return transformer

    def load_processor(self, path: str | None, given: Any) -> Any:
        if given is None and self.st_model is not None:
            return self.st_model[0].tokenizer
        return super().load_processor(path, given)

    def is_head_key(self, key: str) -> bool:
        return False

    def check_model(self, model: Any) -> None:
        from ... import sentence_transformers as st_models

        if not hasattr(model, "config") and not st_models.is_sentence_transformer(model):
            raise MonarchConvertError(f"{type(model).__name__} is not a transformers model")

    # ------------------------------------------------------------------------------ data
    def hold_out(self, ds: Any, cols: dict[str, str], data: DataOptions) -> list[int]:
        """The probe's train part: the ``probe_train_split``, else a seeded part of ``ds``."""
        remaining = list(range(len(ds)))
        if "label" not in cols:
            return remaining
        if data.probe_train_split is not None:
            self.probe_train = _probe_split(data, cols)
        else:
            train, remaining = split_indices(remaining, data.probe_train_fraction, data.seed)
            if data.probe_train_samples is not None:
                train = [train[i] for i in sample_indices(len(train), data.probe_train_samples, data.seed)]
            self.probe_train = ds.select(train)
        self.probe_labels = list(self.probe_train[cols["label"]])
        return remaining

    def references(self, ds: Any, cols: dict[str, str], model: Any) -> list:
        if "label" not in cols:
            return [None] * len(ds)
        return list(ds[cols["label"]])

    def make_batches(self, ds: Any, cols: dict[str, str], processor: Any, model: Any, opts: Options) -> list[Batch]:
        if self.st_model is not None and opts.max_length is None:
            opts = replace(opts, max_length=self.st_model.max_seq_length)
        elif opts.task.pooling not in ("mean", "cls"):
            raise MonarchConvertError(f"pooling must be 'mean' or 'cls', got {opts.task.pooling!r}")
        return tokenized_batches([str(t) for t in ds[cols["text"]]], processor, model, opts)

    # --------------------------------------------------------------------------- running
    def prepare(self, predict: Callable[[Any, str], list], opts: Options) -> None:
        """Fit the linear probe on the original model's embeddings of the probe train part."""
        if self.probe_train is None:
            return
        import torch

        embeddings = torch.stack(predict(self.probe_train, "probe train (original)"))
        self.probe = fit_linear_probe(embeddings.numpy(), self.probe_labels, seed=opts.seed)

    def forward(self, model: Any, batch: Batch, inputs: dict, opts: Options) -> dict:
        import torch

        if self.st_model is not None:  # its Transformer module runs ``model``, then its own modules
            features = self.st_model({k: v for k, v in inputs.items() if k in TOKEN_INPUTS})
            return {"embeddings": features["sentence_embedding"].float().cpu()}
        encoder = model.base_model if getattr(model, "base_model", None) is not None else model
        kwargs = {k: v for k, v in inputs.items() if k in TOKEN_INPUTS}
        if getattr(encoder.config, "is_encoder_decoder", False) and hasattr(encoder, "get_encoder"):
            encoder = encoder.get_encoder()
            kwargs.pop("token_type_ids", None)
        hidden = encoder(**kwargs).last_hidden_state.float()
        if opts.task.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            from ...pooling import mean_pool

            pooled = mean_pool(hidden, inputs["attention_mask"])
        if opts.task.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return {"embeddings": pooled.cpu()}

    def predictions(self, batch: Batch, outputs: dict, opts: Options) -> list:
        return list(outputs["embeddings"])

    def output_fidelity(self, batch: Batch, inputs: dict, ref_out: dict, new_out: dict, model: Any,
                        opts: Options) -> dict[str, tuple[float, int]]:
        import torch

        cos = torch.nn.functional.cosine_similarity(ref_out["embeddings"], new_out["embeddings"], dim=-1)
        return {"embedding_cosine": (float(cos.sum()), cos.numel()), "embedding_cosine_min": (float(cos.min()), -1)}

    # ----------------------------------------------------------------- metrics and report
    def compute_metrics(self, predictions: list, references: list, opts: Options) -> dict[str, tuple[float, str]]:
        import torch

        emb = torch.stack(predictions)
        out: dict[str, tuple[float, str]] = {}
        if self.original_embeddings is None:  # the original itself
            out["embedding_cosine"] = (1.0, "torch")
        else:
            cos = torch.nn.functional.cosine_similarity(emb.float(), self.original_embeddings.float(), dim=-1)
            out["embedding_cosine"] = (float(cos.mean()), "torch")
        if self.probe is not None and all(r is not None for r in references):
            out["probe_accuracy"] = (probe_accuracy(self.probe, emb.numpy(), references), "scikit-learn")
        return out

    def keep_original(self, predictions: list) -> None:
        import torch

        self.original_embeddings = torch.stack(predictions)

    def report_fields(self, data: DataOptions, opts: Options) -> dict[str, Any]:
        if self.st_model is not None:
            modules = [type(module).__name__ for module in self.st_model]
            return {"sentence_transformers_modules": modules, **self._probe_fields(data, opts, ", ".join(modules))}
        return self._probe_fields(data, opts, opts.task.pooling)

    def _probe_fields(self, data: DataOptions, opts: Options, pooling: str) -> dict[str, Any]:
        if self.probe_train is None:
            return {"probe": None}
        train_split = data.probe_train_split or f"seeded {data.probe_train_fraction:g} of {data.split or 'the data'}"
        return {"probe": {"train_examples": len(self.probe_train), "train_split": train_split,
                          "classifier": "sklearn.linear_model.LogisticRegression", "pooling": pooling,
                          "normalize": opts.task.normalize if self.st_model is None else None}}


def _probe_split(data, cols):
    """The seeded sample of ``data.probe_train_split`` the probe is fitted on."""
    split = load_data(data.dataset, dataset_config=data.dataset_config, split=data.probe_train_split)
    if cols["label"] not in split.column_names or cols["text"] not in split.column_names:
        raise MonarchConvertError(f"the probe train split {data.probe_train_split!r} lacks the text or label column")
    check_text_cells(split, cols, ("text",), f"the probe train split {data.probe_train_split!r}")
    return split.select(sample_indices(len(split), data.probe_train_samples, data.seed))
