"""The evaluator's tasks. Each one knows which model head it needs, which dataset columns it reads,
how it batches examples, what one forward pass returns (the part that is timed), how outputs turn
into predictions and metrics, and how the converted model's outputs are compared with the
original's (output-level fidelity, no labels needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MonarchConvertError
from . import metrics as M


@dataclass
class Options:
    batch_size: int = 16
    max_length: int | None = None
    device: str = "cpu"
    dtype: Any = None  # torch dtype
    metric_source: str = "auto"
    extra_metrics: tuple[str, ...] = ()
    seed: int | None = 0
    # sentence embeddings
    pooling: str = "mean"
    normalize: bool = True
    # question answering
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    # summarization
    max_new_tokens: int | None = 64
    num_beams: int | None = None
    max_target_length: int = 128


@dataclass
class Batch:
    index: int
    example_ids: list[int]  # positions in the evaluated sample
    build: Callable[[], dict]  # -> model inputs (CPU tensors)
    lengths: list[int]  # real tokens of each sequence the model sees (for attention FLOPs)
    extra: dict = field(default_factory=dict)


def _auto_names(mapping_name: str) -> set[str]:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for value in getattr(modeling_auto, mapping_name).values():
        names.update(value if isinstance(value, (list, tuple)) else [value])
    return names


def to_device(inputs: dict, device, dtype) -> dict:
    import torch

    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def default_max_length(tokenizer, model) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is None or limit > 100_000:
        limit = getattr(model.config, "max_position_embeddings", None) or 512
    return int(limit)


def kl_and_agreement(ref_logits, new_logits):
    """Per-row KL(softmax(ref) || softmax(new)) summed, and top-1 agreements summed (float32)."""
    import torch

    ref = torch.log_softmax(ref_logits.float(), -1)
    new = torch.log_softmax(new_logits.float(), -1)
    kl = (ref.exp() * (ref - new)).sum(-1).clamp_min(0)
    agree = (ref.argmax(-1) == new.argmax(-1)).float()
    return float(kl.sum()), float(agree.sum()), int(kl.numel())


class Task:
    name = ""
    description = ""
    mapping: str | None = None  # transformers auto mapping whose classes have the task's head
    auto_class = "AutoModel"
    head = ""
    roles: dict[str, tuple[str, ...]] = {}
    required: tuple[str, ...] = ()
    processor_kind = "tokenizer"  # or "image"

    # ------------------------------------------------------------------ model and preprocessor
    def load_model(self, path: str, dtype, device):
        import transformers

        from transformers.utils import logging as hf_logging

        auto = getattr(transformers, self.auto_class)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # missing head weights are reported below, in one line
        try:
            model, info = auto.from_pretrained(path, dtype=dtype if dtype is not None else "auto", output_loading_info=True)
        except (ValueError, KeyError) as exc:  # the config's model type has no class for this head
            raise MonarchConvertError(
                f"{path} cannot be loaded as a model with a {self.head} (task {self.name}): {str(exc).splitlines()[0]}"
            ) from exc
        except OSError as exc:
            raise MonarchConvertError(f"cannot load {path}: {str(exc).splitlines()[0]}") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = [k for k in info.get("missing_keys", []) if self._is_head_key(k)]
        if missing:
            raise MonarchConvertError(
                f"{path} has no trained {self.head} for task {self.name} (missing weights: {', '.join(sorted(missing)[:4])})"
            )
        return model.to(device).eval()

    def _is_head_key(self, key: str) -> bool:
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
        except Exception as exc:  # noqa: BLE001
            raise MonarchConvertError(f"could not load the {self.processor_kind} of {path}: {str(exc).splitlines()[0]}") from exc

    # ------------------------------------------------------------------------------ data
    def references(self, ds, cols, model) -> list:
        return [None] * len(ds)

    def make_batches(self, ds, cols, processor, model, opts: Options) -> list[Batch]:
        raise NotImplementedError

    # --------------------------------------------------------------------------- running
    def forward(self, model, batch: Batch, inputs: dict, opts: Options) -> dict:
        raise NotImplementedError

    def predictions(self, batch: Batch, outputs: dict, opts: Options) -> list:
        raise NotImplementedError

    def compute_metrics(self, predictions: list, references: list, opts: Options, state: dict) -> dict[str, tuple[float, str]]:
        raise NotImplementedError

    def output_fidelity(self, batch, inputs, ref_out, new_out, original, converted, opts) -> dict[str, tuple[float, int]]:
        """{name: (sum, count)} accumulated over batches; reported as sum / count."""
        raise NotImplementedError

    def setup(self, runner) -> None:
        """Work done once with the original model before evaluation (e.g. fitting a probe)."""


# ============================================================================== classification


class _Classification(Task):
    def references(self, ds, cols, model):
        labels = ds[cols["label"]]
        return [self._label_id(lab, model, ds.features.get(cols["label"])) for lab in labels]

    def _label_id(self, label, model, feature):
        num = model.config.num_labels
        if isinstance(label, str) or (feature is not None and hasattr(feature, "names")):
            name = feature.int2str(label) if feature is not None and hasattr(feature, "names") and not isinstance(label, str) else label
            l2i = {str(k).lower(): v for k, v in (model.config.label2id or {}).items()}
            if str(name).lower() in l2i:
                return int(l2i[str(name).lower()])
            if isinstance(label, str):
                if label.lstrip("-").isdigit() and 0 <= int(label) < num:
                    return int(label)
                raise MonarchConvertError(
                    f"label {label!r} is not one of the model's labels ({', '.join(map(str, (model.config.label2id or {}).keys()))})"
                )
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num:
            raise MonarchConvertError(f"label {label!r} is not a class index of the model (0..{num - 1})")
        return int(label)

    def predictions(self, batch, outputs, opts):
        return list(outputs["logits"])

    def output_fidelity(self, batch, inputs, ref_out, new_out, original, converted, opts):
        kl, agree, n = kl_and_agreement(ref_out["logits"], new_out["logits"])
        return {"kl": (kl, n), "top1_agreement": (100.0 * agree, n)}


class ImageClassification(_Classification):
    name = "image-classification"
    description = "top-1 / top-5 accuracy"
    mapping = "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"
    auto_class = "AutoModelForImageClassification"
    head = "image-classification head"
    roles = {"image": ("image", "img", "pixel_values", "picture"), "label": ("label", "labels", "fine_label", "class")}
    required = ("image", "label")
    processor_kind = "image"

    def _is_head_key(self, key):
        return key.startswith(("classifier", "head", "fc"))

    def make_batches(self, ds, cols, processor, model, opts):
        from PIL import Image

        channels = getattr(model.config, "num_channels", 3)
        mode = "L" if channels == 1 else "RGB"
        col = cols["image"]
        seq = _vision_seq_len(model)
        batches = []

        def build(ids):
            def _build():
                images = []
                for item in ds.select(ids)[col]:
                    if isinstance(item, str):
                        item = Image.open(item)
                    elif not isinstance(item, Image.Image):
                        import numpy as np

                        item = Image.fromarray(np.asarray(item, dtype="uint8"))
                    images.append(item.convert(mode))
                return {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}

            return _build

        n = len(ds)
        for bi, start in enumerate(range(0, n, opts.batch_size)):
            ids = list(range(start, min(n, start + opts.batch_size)))
            batches.append(Batch(bi, ids, build(ids), [seq] * len(ids)))
        return batches

    def forward(self, model, batch, inputs, opts):
        return {"logits": model(pixel_values=inputs["pixel_values"]).logits.float().cpu()}

    def compute_metrics(self, predictions, references, opts, state):
        import torch

        return M.classification_metrics(torch.stack(predictions), references, top_k=(1, 5), source=opts.metric_source)


def _vision_seq_len(model) -> int:
    cfg = model.config
    size, patch = getattr(cfg, "image_size", None), getattr(cfg, "patch_size", None)
    if isinstance(size, int) and isinstance(patch, int):
        extra = 1 + (1 if "distill" in type(model).__name__.lower() or getattr(cfg, "model_type", "") == "deit" else 0)
        return (size // patch) ** 2 + extra
    return 1


class _TextTask(Task):
    def _tokenize_sorted(self, texts, tokenizer, model, opts, pairs=None):
        """Tokenize every example once (no padding) and batch by decreasing length."""
        max_length = opts.max_length or default_max_length(tokenizer, model)
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length) if pairs is not None else tokenizer(
            texts, truncation=True, max_length=max_length
        )
        lengths = [len(ids) for ids in enc["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        keys = [k for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
        batches = []
        for bi, start in enumerate(range(0, len(order), opts.batch_size)):
            ids = order[start : start + opts.batch_size]

            def _build(ids=ids):
                feats = [{k: enc[k][i] for k in keys} for i in ids]
                return dict(tokenizer.pad(feats, padding=True, return_tensors="pt"))

            batches.append(Batch(bi, ids, _build, [lengths[i] for i in ids]))
        return batches


class TextClassification(_Classification, _TextTask):
    name = "text-classification"
    description = "accuracy, macro F1"
    mapping = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
    auto_class = "AutoModelForSequenceClassification"
    head = "sequence-classification head"
    roles = {
        "text": ("text", "sentence", "sentence1", "content", "review", "document"),
        "text_pair": ("text_pair", "sentence2"),
        "label": ("label", "labels", "class"),
    }
    required = ("text", "label")

    def _is_head_key(self, key):
        return key.startswith(("classifier", "score", "pre_classifier", "classification_head"))

    def make_batches(self, ds, cols, processor, model, opts):
        texts = [str(t) for t in ds[cols["text"]]]
        pairs = [str(t) for t in ds[cols["text_pair"]]] if "text_pair" in cols else None
        return self._tokenize_sorted(texts, processor, model, opts, pairs)

    def forward(self, model, batch, inputs, opts):
        return {"logits": model(**inputs).logits.float().cpu()}

    def compute_metrics(self, predictions, references, opts, state):
        import torch

        return M.classification_metrics(torch.stack(predictions), references, top_k=(1,), f1=True, source=opts.metric_source)


# ==================================================================================== embeddings


class SentenceEmbedding(_TextTask):
    name = "sentence-embedding"
    description = "cosine to the original's embeddings; linear-probe accuracy"
    auto_class = "AutoModel"
    head = "encoder"
    roles = {"text": ("text", "sentence", "content", "review", "document"), "label": ("label", "labels", "class")}
    required = ("text",)

    def _is_head_key(self, key):
        return False

    def check_model(self, model):
        if not hasattr(model, "config"):
            raise MonarchConvertError(f"{type(model).__name__} is not a transformers model")

    def references(self, ds, cols, model):
        if "label" not in cols:
            return [None] * len(ds)
        return list(ds[cols["label"]])

    def make_batches(self, ds, cols, processor, model, opts):
        if opts.pooling not in ("mean", "cls"):
            raise MonarchConvertError(f"pooling must be 'mean' or 'cls', got {opts.pooling!r}")
        return self._tokenize_sorted([str(t) for t in ds[cols["text"]]], processor, model, opts)

    def forward(self, model, batch, inputs, opts):
        import torch

        encoder = model.base_model if getattr(model, "base_model", None) is not None else model
        kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if getattr(encoder.config, "is_encoder_decoder", False) and hasattr(encoder, "get_encoder"):
            encoder = encoder.get_encoder()
            kwargs.pop("token_type_ids", None)
        hidden = encoder(**kwargs).last_hidden_state.float()
        if opts.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            from ..pooling import mean_pool

            pooled = mean_pool(hidden, inputs["attention_mask"])
        if opts.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return {"embeddings": pooled.cpu()}

    def predictions(self, batch, outputs, opts):
        return list(outputs["embeddings"])

    def setup(self, runner):
        """Fit the linear probe on the original model's embeddings of the probe train split."""
        if runner.probe_data is None:
            self.probe = None
            return
        ds, labels = runner.probe_data
        emb = runner.embed_with_original(ds)
        self.probe = M.fit_linear_probe(emb.numpy(), labels, seed=runner.opts.seed)
        self.probe_train_size = len(labels)

    def compute_metrics(self, predictions, references, opts, state):
        import torch

        emb = torch.stack(predictions)
        out: dict[str, tuple[float, str]] = {}
        ref = state.get("original_embeddings")
        if ref is None:  # the original itself
            out["embedding_cosine"] = (1.0, "torch")
        else:
            cos = torch.nn.functional.cosine_similarity(emb.float(), ref.float(), dim=-1)
            out["embedding_cosine"] = (float(cos.mean()), "torch")
        if getattr(self, "probe", None) is not None and all(r is not None for r in references):
            out["probe_accuracy"] = (M.probe_accuracy(self.probe, emb.numpy(), references), "scikit-learn")
        return out

    def output_fidelity(self, batch, inputs, ref_out, new_out, original, converted, opts):
        import torch

        cos = torch.nn.functional.cosine_similarity(ref_out["embeddings"], new_out["embeddings"], dim=-1)
        return {"embedding_cosine": (float(cos.sum()), cos.numel()), "embedding_cosine_min": (float(cos.min()), -1)}


# ============================================================================ question answering


class QuestionAnswering(Task):
    name = "question-answering"
    description = "SQuAD exact match / F1"
    mapping = "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"
    auto_class = "AutoModelForQuestionAnswering"
    head = "question-answering (span) head"
    roles = {"question": ("question",), "context": ("context",), "answers": ("answers",), "id": ("id",)}
    required = ("question", "context", "answers")

    def _is_head_key(self, key):
        return key.startswith("qa_outputs")

    def references(self, ds, cols, model):
        refs = []
        ids = ds[cols["id"]] if "id" in cols else list(range(len(ds)))
        for i, ans in zip(ids, ds[cols["answers"]]):
            if not isinstance(ans, dict) or "text" not in ans:
                raise MonarchConvertError(
                    "the answers column must hold SQuAD-style {'text': [...], 'answer_start': [...]} records"
                )
            refs.append({"id": str(i), "answers": {"text": list(ans["text"]), "answer_start": list(ans.get("answer_start", [0] * len(ans["text"])))}})
        return refs

    def make_batches(self, ds, cols, processor, model, opts):
        if not getattr(processor, "is_fast", False):
            raise MonarchConvertError("question answering needs a fast tokenizer (offset mappings)")
        tok = processor
        max_length = opts.max_length or min(384, default_max_length(tok, model))
        questions = [str(q).lstrip() for q in ds[cols["question"]]]
        contexts = [str(c) for c in ds[cols["context"]]]
        batches = []
        for bi, start in enumerate(range(0, len(ds), opts.batch_size)):
            ids = list(range(start, min(len(ds), start + opts.batch_size)))
            enc = tok([questions[i] for i in ids], [contexts[i] for i in ids], truncation="only_second",
                      max_length=max_length, stride=min(opts.doc_stride, max_length // 2), return_overflowing_tokens=True,
                      return_offsets_mapping=True, padding=True, return_tensors="pt")
            mapping = enc.pop("overflow_to_sample_mapping").tolist()
            offsets = enc.pop("offset_mapping").tolist()
            seq_ids = [enc.sequence_ids(f) for f in range(len(mapping))]
            inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            lengths = enc["attention_mask"].sum(-1).tolist()
            extra = {"feature_example": [ids[m] for m in mapping], "offsets": offsets, "sequence_ids": seq_ids,
                     "contexts": {i: contexts[i] for i in ids}}
            batches.append(Batch(bi, ids, (lambda inputs=inputs: inputs), lengths, extra))
        return batches

    def forward(self, model, batch, inputs, opts):
        out = model(**inputs)
        return {"start_logits": out.start_logits.float().cpu(), "end_logits": out.end_logits.float().cpu()}

    def predictions(self, batch, outputs, opts):
        import numpy as np

        best: dict[int, tuple[float, str]] = {}
        for f, ex in enumerate(batch.extra["feature_example"]):
            start = outputs["start_logits"][f].numpy()
            end = outputs["end_logits"][f].numpy()
            offsets, seq = batch.extra["offsets"][f], batch.extra["sequence_ids"][f]
            context = batch.extra["contexts"][ex]
            starts = np.argsort(start)[::-1][: opts.n_best]
            ends = np.argsort(end)[::-1][: opts.n_best]
            for s in starts:
                for e in ends:
                    if s >= len(seq) or e >= len(seq) or seq[s] != 1 or seq[e] != 1:
                        continue
                    if e < s or e - s + 1 > opts.max_answer_length:
                        continue
                    score = float(start[s] + end[e])
                    if ex not in best or score > best[ex][0]:
                        best[ex] = (score, context[offsets[s][0] : offsets[e][1]])
        return [best.get(ex, (0.0, ""))[1] for ex in batch.example_ids]

    def compute_metrics(self, predictions, references, opts, state):
        preds = [{"id": r["id"], "prediction_text": p} for p, r in zip(predictions, references)]
        return M.squad_metrics(preds, references, source=opts.metric_source)

    def output_fidelity(self, batch, inputs, ref_out, new_out, original, converted, opts):
        import torch

        mask = inputs["attention_mask"].cpu().bool()
        big = torch.finfo(torch.float32).min
        kl_s, agree_s, n = kl_and_agreement(ref_out["start_logits"].masked_fill(~mask, big), new_out["start_logits"].masked_fill(~mask, big))
        kl_e, agree_e, _ = kl_and_agreement(ref_out["end_logits"].masked_fill(~mask, big), new_out["end_logits"].masked_fill(~mask, big))
        ref_pred = self.predictions(batch, ref_out, opts)
        new_pred = self.predictions(batch, new_out, opts)
        same = sum(a == b for a, b in zip(ref_pred, new_pred))
        return {"kl": ((kl_s + kl_e) / 2, n), "top1_agreement": (100.0 * (agree_s + agree_e) / 2, n),
                "answer_agreement": (100.0 * same, len(ref_pred))}


# ================================================================================= summarization


class Summarization(Task):
    name = "summarization"
    description = "ROUGE-1/2/L/Lsum of generated summaries"
    mapping = "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"
    auto_class = "AutoModelForSeq2SeqLM"
    head = "sequence-to-sequence LM head"
    roles = {"document": ("document", "article", "text", "input", "chapter", "source"),
             "summary": ("summary", "highlights", "target", "abstract", "summary_text")}
    required = ("document", "summary")

    def _is_head_key(self, key):
        return key.startswith("lm_head") and "lm_head.weight" != key  # lm_head.weight is tied to the embeddings

    def references(self, ds, cols, model):
        return [str(s) for s in ds[cols["summary"]]]

    def make_batches(self, ds, cols, processor, model, opts):
        tok = processor
        max_length = opts.max_length or default_max_length(tok, model)
        docs = [str(d) for d in ds[cols["document"]]]
        sums = [str(s) for s in ds[cols["summary"]]]
        enc = tok(docs, truncation=True, max_length=max_length)
        lengths = [len(x) for x in enc["input_ids"]]
        order = sorted(range(len(docs)), key=lambda i: (-lengths[i], i))
        batches = []
        for bi, start in enumerate(range(0, len(order), opts.batch_size)):
            ids = order[start : start + opts.batch_size]

            def _build(ids=ids):
                feats = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i]} for i in ids]
                inputs = dict(tok.pad(feats, padding=True, return_tensors="pt"))
                labels = tok(text_target=[sums[i] for i in ids], truncation=True, max_length=opts.max_target_length,
                             padding=True, return_tensors="pt")
                inputs["labels"] = labels["input_ids"]
                inputs["labels_mask"] = labels["attention_mask"]
                return inputs

            batches.append(Batch(bi, ids, _build, [lengths[i] for i in ids]))
        return batches

    def forward(self, model, batch, inputs, opts):
        gen_kwargs: dict[str, Any] = {}
        if opts.max_new_tokens is not None:
            gen_kwargs["max_new_tokens"] = opts.max_new_tokens
        if opts.num_beams is not None:
            gen_kwargs["num_beams"] = opts.num_beams
        out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False, **gen_kwargs)
        return {"sequences": out.cpu()}

    def predictions(self, batch, outputs, opts):
        return [t.strip() for t in self.tokenizer.batch_decode(outputs["sequences"], skip_special_tokens=True)]

    def compute_metrics(self, predictions, references, opts, state):
        return M.rouge_metrics(predictions, references, source=opts.metric_source)

    def output_fidelity(self, batch, inputs, ref_out, new_out, original, converted, opts):
        """Next-token distributions teacher-forced on the reference summary (both models, same
        decoder inputs): KL and top-1 agreement over the summary's real tokens."""
        import torch

        labels = inputs["labels"]
        mask = inputs["labels_mask"].bool()
        kw = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels.masked_fill(~mask, -100))
        with torch.no_grad():
            new = converted(**kw).logits
            with self.softmax_context():
                ref = converted(**kw).logits
        m = mask.to(ref.device)
        kl, agree, n = kl_and_agreement(ref[m], new[m])
        same = sum(a.tolist() == b.tolist() for a, b in zip(ref_out["sequences"], new_out["sequences"]))
        return {"kl": (kl, n), "top1_agreement": (100.0 * agree, n), "generation_agreement": (100.0 * same, len(batch.example_ids))}

    def load_processor(self, path, given):
        self.tokenizer = super().load_processor(path, given)
        return self.tokenizer


TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ImageClassification, TextClassification, QuestionAnswering, Summarization, SentenceEmbedding)
}
ALIASES = {"image": "image-classification", "text": "text-classification", "qa": "question-answering",
           "extractive-qa": "question-answering", "summarize": "summarization", "embedding": "sentence-embedding",
           "sentence-embeddings": "sentence-embedding", "embeddings": "sentence-embedding"}


def get_task(name: str) -> Task:
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TASKS:
        raise MonarchConvertError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})")
    return TASKS[key]()

