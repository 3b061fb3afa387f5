"""Extractive question answering: SQuAD exact match / F1 of an ``AutoModelForQuestionAnswering``.
Long contexts are cut into overlapping windows; an example's answer is the best-scoring span over
its windows."""

from __future__ import annotations

from typing import Any

from ...errors import MonarchConvertError
from ..fidelity import kl_and_agreement
from ..metrics import squad_metrics
from .base import TOKEN_INPUTS, Batch, Options, Task, chunks, default_max_length


class QuestionAnswering(Task):
    name = "question-answering"
    description = "SQuAD exact match / F1"
    mapping = "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"
    auto_class = "AutoModelForQuestionAnswering"
    head = "question-answering (span) head"
    roles = {"question": ("question",), "context": ("context",), "answers": ("answers",), "id": ("id",)}
    required = ("question", "context", "answers")
    text_roles = ("question", "context")

    def is_head_key(self, key: str) -> bool:
        return key.startswith("qa_outputs")

    def references(self, ds: Any, cols: dict[str, str], model: Any) -> list:
        refs = []
        ids = ds[cols["id"]] if "id" in cols else list(range(len(ds)))
        for i, ans in zip(ids, ds[cols["answers"]]):
            if not isinstance(ans, dict) or "text" not in ans:
                raise MonarchConvertError(
                    "the answers column must hold SQuAD-style {'text': [...], 'answer_start': [...]} records"
                )
            starts = list(ans.get("answer_start", [0] * len(ans["text"])))
            refs.append({"id": str(i), "answers": {"text": list(ans["text"]), "answer_start": starts}})
        return refs

    def make_batches(self, ds: Any, cols: dict[str, str], processor: Any, model: Any, opts: Options) -> list[Batch]:
        if not getattr(processor, "is_fast", False):
            raise MonarchConvertError("question answering needs a fast tokenizer (offset mappings)")
        max_length = opts.max_length or min(384, default_max_length(processor, model))
        questions = [str(q).lstrip() for q in ds[cols["question"]]]
        contexts = [str(c) for c in ds[cols["context"]]]
        batches = []
        for bi, ids in enumerate(chunks(range(len(ds)), opts.batch_size)):
            enc = processor([questions[i] for i in ids], [contexts[i] for i in ids], truncation="only_second",
                            max_length=max_length, stride=min(opts.task.doc_stride, max_length // 2),
                            return_overflowing_tokens=True, return_offsets_mapping=True, padding=True,
                            return_tensors="pt")
            mapping = enc.pop("overflow_to_sample_mapping").tolist()
            extra = {"feature_example": [ids[m] for m in mapping], "offsets": enc.pop("offset_mapping").tolist(),
                     "sequence_ids": [enc.sequence_ids(f) for f in range(len(mapping))],
                     "contexts": {i: contexts[i] for i in ids}}
            inputs = {k: v for k, v in enc.items() if k in TOKEN_INPUTS}
            lengths = enc["attention_mask"].sum(-1).tolist()
            batches.append(Batch(bi, ids, (lambda inputs=inputs: inputs), lengths, extra))
        return batches

    def forward(self, model: Any, batch: Batch, inputs: dict, opts: Options) -> dict:
        out = model(**inputs)
        return {"start_logits": out.start_logits.float().cpu(), "end_logits": out.end_logits.float().cpu()}

    def predictions(self, batch: Batch, outputs: dict, opts: Options) -> list:
        best: dict[int, tuple[float, str]] = {}
        for f, ex in enumerate(batch.extra["feature_example"]):
            score, answer = _best_span(batch, f, outputs, opts)
            if answer is not None and (ex not in best or score > best[ex][0]):
                best[ex] = (score, answer)
        return [best.get(ex, (0.0, ""))[1] for ex in batch.example_ids]

    def output_fidelity(self, batch: Batch, inputs: dict, ref_out: dict, new_out: dict, model: Any,
                        opts: Options) -> dict[str, tuple[float, int]]:
        import torch

        mask = inputs["attention_mask"].cpu().bool()
        big = torch.finfo(torch.float32).min

        def compare(key: str) -> tuple[float, float, int]:
            return kl_and_agreement(ref_out[key].masked_fill(~mask, big), new_out[key].masked_fill(~mask, big))

        kl_s, agree_s, n = compare("start_logits")
        kl_e, agree_e, _ = compare("end_logits")
        ref_pred = self.predictions(batch, ref_out, opts)
        new_pred = self.predictions(batch, new_out, opts)
        same = sum(a == b for a, b in zip(ref_pred, new_pred))
        return {"kl": ((kl_s + kl_e) / 2, n), "top1_agreement": (100.0 * (agree_s + agree_e) / 2, n),
                "answer_agreement": (100.0 * same, len(ref_pred))}

    def compute_metrics(self, predictions: list, references: list, opts: Options) -> dict[str, tuple[float, str]]:
        preds, refs = self.extra_metric_inputs(predictions, references)
        return squad_metrics(preds, refs, source=opts.metric_source)

    def extra_metric_inputs(self, predictions: list, references: list) -> tuple[list, list]:
        return [{"id": r["id"], "prediction_text": p} for p, r in zip(predictions, references)], references


def _best_span(batch, f: int, outputs, opts) -> tuple[float, str | None]:
    """The best-scoring (start + end logit) context span of window ``f`` among the ``n_best``
    starts and ends, at most ``max_answer_length`` tokens; (score, None) if there is none."""
    import numpy as np

    start = outputs["start_logits"][f].numpy()
    end = outputs["end_logits"][f].numpy()
    offsets, seq = batch.extra["offsets"][f], batch.extra["sequence_ids"][f]
    ends = np.argsort(end)[::-1][: opts.task.n_best]
    best: tuple[float, str | None] = (float("-inf"), None)
    for s in np.argsort(start)[::-1][: opts.task.n_best]:
        for e in ends:
            if s >= len(seq) or e >= len(seq) or seq[s] != 1 or seq[e] != 1:
                continue
            if e < s or e - s + 1 > opts.task.max_answer_length:
                continue
            score = float(start[s] + end[e])
            if best[1] is None or score > best[0]:
                context = batch.extra["contexts"][batch.extra["feature_example"][f]]
                best = (score, context[offsets[s][0] : offsets[e][1]])
    return best
