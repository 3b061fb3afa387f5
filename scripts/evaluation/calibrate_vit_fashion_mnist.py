"""Calibrate the in-project ViT (trained here on Fashion-MNIST by train_vit_fashion_mnist.py) with
every layer converted, at several FLOPs budgets, on training images; then evaluate top-1 on the
test images with the evaluator, each calibrated setting beside the same settings uncalibrated
(both curves in evaluation.png).

    nice -n 10 python scripts/evaluation/calibrate_vit_fashion_mnist.py --max-flops 0.45 0.6 0.75 \
        --out out/calibrate-vit

"Every layer converted": ``calibrate(..., allow_softmax=False)`` (the search still chooses per
layer among b, T and the variants). Retrains the model into the cache if it
is missing (as eval_vit_fashion_mnist.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_vit_fashion_mnist import DEFAULT_MODEL, test_dataset  # noqa: E402
from fashion_mnist import load_split  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--max-flops", type=float, nargs="+", default=[0.45, 0.6, 0.75])
    ap.add_argument("--samples", type=int, default=256, help="training images used to calibrate")
    ap.add_argument("--test-samples", type=int, default=None, help="default: all 10,000 test images")
    ap.add_argument("--out", type=Path, default=Path("out/calibrate-vit"))
    a = ap.parse_args(argv)

    import numpy as np
    from transformers import AutoImageProcessor, ViTForImageClassification

    import monarch_convert as mc
    from monarch_convert.calibration.saving import CalibratedSetting
    from monarch_convert.conversion import calibration_of

    model = ViTForImageClassification.from_pretrained(a.model).eval()
    processor = AutoImageProcessor.from_pretrained(a.model)
    images, _ = load_split("train")
    picked = np.random.default_rng(0).choice(len(images), size=a.samples, replace=False)
    train_images = [images[i] for i in sorted(picked.tolist())]
    sweep, reports = [], []
    for budget in a.max_flops:
        report = mc.calibrate(model, train_images, processor, max_flops=budget, samples=a.samples,
                              allow_softmax=False)  # every layer converted
        print(report.format_table(), flush=True)
        settings = mc.conversion_report(model).settings
        sweep += [CalibratedSetting(settings, calibration_of(model), f"max_flops={budget:g}"),
                  settings]  # the same settings uncalibrated
        reports.append(report.to_dict())
        mc.revert(model)
    evaluation = mc.evaluate(
        model, "image-classification", test_dataset(a.test_samples), sweep=sweep, processor=processor,
        batch_size=250, out_dir=a.out, metric_source="offline",
        dataset_name="Fashion-MNIST test set (Debian dataset-fashion-mnist)",
        model_name=f"ViT trained in this project on Fashion-MNIST ({a.model.name})",
    )
    d = evaluation.to_dict()
    d["calibration_reports"] = reports
    (a.out / "evaluation.json").write_text(json.dumps(d, indent=2, default=str) + "\n")
    print(evaluation.to_markdown())


if __name__ == "__main__":
    main()
