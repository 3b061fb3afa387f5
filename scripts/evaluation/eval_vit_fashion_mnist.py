"""Evaluate the in-project ViT (trained here on Fashion-MNIST by train_vit_fashion_mnist.py; not a
pretrained model) before and after conversion to MonarchAttention, on the 10,000 test images.

    nice -n 10 python scripts/evaluation/eval_vit_fashion_mnist.py --out out/vit-fashion-mnist

Retrains the model into the cache (``--model``, default .cache/vit-fashion-mnist) if it is missing.
N = 50 tokens (class token + 7 x 7 patches); ``pre`` padding, so with b = 7 the class token sits
alone in block 0 and every other block is one row of patches (the paper's ViT layout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import CLASSES, load_split

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / ".cache" / "vit-fashion-mnist"  # at the repository root
DEFAULT_SWEEP = ["b=7,T=1", "b=7,T=2", "b=7,T=3", "b=5,T=1", "b=10,T=1", "b=10,T=2", "b=14,T=1", "b=25,T=1",
                 "b=7,T=1,layers=1+2+3", "b=7,T=2,layers=1+2+3", "b=7,T=3,layers=1+2+3"]


def test_dataset(limit: int | None = None):
    import datasets
    from PIL import Image

    images, labels = load_split("test")
    if limit:
        images, labels = images[:limit], labels[:limit]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(im, mode="L") for im in images], "label": labels.tolist()}, features=features
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--out", type=Path, default=Path("out/vit-fashion-mnist"))
    ap.add_argument("--samples", type=int, default=None, help="default: all 10,000 test images")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--setting", action="append", help="e.g. b=7,T=2 (repeatable); default: a sweep")
    a = ap.parse_args(argv)

    if not (a.model / "model.safetensors").exists():
        from train_vit_fashion_mnist import train

        print(f"No checkpoint at {a.model}: training one (a few minutes on CPU) ...", flush=True)
        train(a.model, epochs=12, batch=128, lr=2e-3, hidden=96, layers=4, heads=4, seed=0, threads=None)

    import monarch_convert as mc
    from monarch_convert.config import parse_setting

    ds = test_dataset(a.samples)
    sweep = [dict(parse_setting(s), pad_type="pre") for s in (a.setting or DEFAULT_SWEEP)]
    report = mc.evaluate(
        str(a.model), "image-classification", ds, sweep=sweep, batch_size=a.batch_size, out_dir=a.out,
        metric_source="offline", dataset_name="Fashion-MNIST test set (Debian dataset-fashion-mnist)",
        model_name=f"ViT trained in this project on Fashion-MNIST ({a.model.name})",
    )
    training = a.model / "training.json"
    if training.exists():
        meta = json.loads(training.read_text())
        d = report.to_dict()
        d["model_training"] = meta
        (a.out / "evaluation.json").write_text(json.dumps(d, indent=2, default=str) + "\n")
    print(report.to_markdown())


if __name__ == "__main__":
    main()
