"""Heal the in-project ViT (trained here by train_vit_fashion_mnist.py) after converting every
layer: top-1 accuracy on the 10,000 Fashion-MNIST test images of the original (softmax), of the
converted model zero-shot, and of the converted model healed on unlabelled training images.

    nice -n 10 python scripts/evaluation/heal_vit_fashion_mnist.py --out out/heal-vit

Healing sees the training images only (no labels): ``monarch_convert.heal`` distils the converted
model's logits towards the original's (KL), holding out 500 training images for its fidelity
(top-1 agreement with the original) before and after. The test images are used only for the
accuracies. Writes ``heal.json`` (every number, the settings and the wall times) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import load_split
from train_vit_fashion_mnist import accuracy

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / ".cache" / "vit-fashion-mnist"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--out", type=Path, default=Path("out/heal-vit"))
    ap.add_argument("--setting", default="b=7,T=1", help="conversion setting (every layer, pre padding)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--trainable", default="all", choices=["attention", "all", "lora"])
    ap.add_argument("--train-images", type=int, default=None, help="default: all 60,000")
    ap.add_argument("--test-images", type=int, default=None, help="default: all 10,000")
    ap.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (resumes from it)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)

    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import monarch_convert as mc
    from monarch_convert.config import parse_setting

    started = time.perf_counter()
    x_train, _ = load_split("train")  # the labels are never read
    x_test, y_test = load_split("test")
    x_train, x_test, y_test = x_train[: a.train_images], x_test[: a.test_images], y_test[: a.test_images]
    model = AutoModelForImageClassification.from_pretrained(a.model).to(a.device).eval()
    processor = AutoImageProcessor.from_pretrained(a.model)
    result = {"model": str(a.model), "setting": a.setting, "test_images": len(x_test), "train_images": len(x_train)}
    result["softmax"] = accuracy(model, x_test, y_test)
    mc.convert(model, dict(parse_setting(a.setting), pad_type="pre"))
    result["converted"] = accuracy(model, x_test, y_test)
    print(f"softmax {result['softmax']:.4f}, converted zero-shot {result['converted']:.4f}", flush=True)
    heal_started = time.perf_counter()
    report = mc.heal(model, list(x_train), steps=a.steps, batch_size=a.batch_size, lr=a.lr, trainable=a.trainable,
                     processor=processor, eval_samples=500, checkpoint_dir=a.checkpoint,
                     data_name="Fashion-MNIST training images, unlabelled")
    result["heal_wall_s"] = round(time.perf_counter() - heal_started, 1)
    result["healed"] = accuracy(model, x_test, y_test)
    result["heal"] = report.to_dict()
    result["whole_run_s"] = round(time.perf_counter() - started, 1)
    result["torch_threads"] = torch.get_num_threads()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "heal.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report.summary())
    print(f"top-1 on {len(x_test)} test images: softmax {100 * result['softmax']:.2f}, converted "
          f"{100 * result['converted']:.2f}, healed {100 * result['healed']:.2f} "
          f"(healing {result['heal_wall_s']:.0f}s, whole run {result['whole_run_s']:.0f}s)")


if __name__ == "__main__":
    main()
