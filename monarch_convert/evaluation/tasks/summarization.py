"""Summarization: ROUGE-1/2/L/Lsum of the summaries an ``AutoModelForSeq2SeqLM`` generates
(greedy, or beam search with ``num_beams``)."""

from __future__ import annotations

from typing import Any

from ..fidelity import kl_and_agreement
from ..metrics import rouge_metrics
from .base import Batch, Options, Task, batches_by_length, default_max_length


class Summarization(Task):
    name = "summarization"
    description = "ROUGE-1/2/L/Lsum of generated summaries"
    mapping = "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"
    auto_class = "AutoModelForSeq2SeqLM"
    head = "sequence-to-sequence LM head"
    roles = {"document": ("document", "article", "text", "input", "chapter", "source"),
             "summary": ("summary", "highlights", "target", "abstract", "summary_text")}
    required = ("document", "summary")
    text_roles = ("document", "summary")

    def is_head_key(self, key: str) -> bool:
        return key.startswith("lm_head") and "lm_head.weight" != key  # lm_head.weight is tied to the embeddings

    def load_processor(self, path: str | None, given: Any) -> Any:
        self.tokenizer = super().load_processor(path, given)  # predictions decode with it
        return self.tokenizer

    def references(self, ds: Any, cols: dict[str, str], model: Any) -> list:
        return [str(s) for s in ds[cols["summary"]]]

    def make_batches(self, ds: Any, cols: dict[str, str], processor: Any, model: Any, opts: Options) -> list[Batch]:
        """Documents as inputs; the reference summaries as ``labels`` (for teacher-forced fidelity)."""
        docs = [str(d) for d in ds[cols["document"]]]
        sums = [str(s) for s in ds[cols["summary"]]]
        enc = processor(docs, truncation=True, max_length=opts.max_length or default_max_length(processor, model))

        def build(ids: list[int]) -> dict:
            feats = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i]} for i in ids]
            inputs = dict(processor.pad(feats, padding=True, return_tensors="pt"))
            labels = processor(text_target=[sums[i] for i in ids], truncation=True,
                               max_length=opts.task.max_target_length, padding=True, return_tensors="pt")
            inputs["labels"] = labels["input_ids"]
            inputs["labels_mask"] = labels["attention_mask"]
            return inputs

        return batches_by_length([len(x) for x in enc["input_ids"]], opts.batch_size, build)

    def forward(self, model: Any, batch: Batch, inputs: dict, opts: Options) -> dict:
        gen_kwargs: dict[str, Any] = {}
        if opts.task.max_new_tokens is not None:
            gen_kwargs["max_new_tokens"] = opts.task.max_new_tokens
        if opts.task.num_beams is not None:
            gen_kwargs["num_beams"] = opts.task.num_beams
        out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], do_sample=False,
                             **gen_kwargs)
        return {"sequences": out.cpu()}

    def predictions(self, batch: Batch, outputs: dict, opts: Options) -> list:
        return [t.strip() for t in self.tokenizer.batch_decode(outputs["sequences"], skip_special_tokens=True)]

    def output_fidelity(self, batch: Batch, inputs: dict, ref_out: dict, new_out: dict, model: Any,
                        opts: Options) -> dict[str, tuple[float, int]]:
        """Next-token distributions teacher-forced on the reference summary (both models, same
        decoder inputs): KL and top-1 agreement over the summary's real tokens."""
        import torch

        from ...conversion import softmax

        mask = inputs["labels_mask"].bool()
        kw = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                  labels=inputs["labels"].masked_fill(~mask, -100))
        with torch.no_grad():
            new = model(**kw).logits
            with softmax(model):
                ref = model(**kw).logits
        m = mask.to(ref.device)
        kl, agree, n = kl_and_agreement(ref[m], new[m])
        same = sum(a.tolist() == b.tolist() for a, b in zip(ref_out["sequences"], new_out["sequences"]))
        return {"kl": (kl, n), "top1_agreement": (100.0 * agree, n),
                "generation_agreement": (100.0 * same, len(batch.example_ids))}

    def compute_metrics(self, predictions: list, references: list, opts: Options) -> dict[str, tuple[float, str]]:
        return rouge_metrics(predictions, references, source=opts.metric_source)

    def extra_metric_inputs(self, predictions: list, references: list) -> tuple[list, list]:
        return list(predictions), references
