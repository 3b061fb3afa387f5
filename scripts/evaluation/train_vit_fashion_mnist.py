"""Train a small ViT on Fashion-MNIST, here, from scratch (it is NOT a pretrained model).

The model is a transformers ``ViTForImageClassification``: 28x28 grey images, 4x4 patches, so
N = 1 class token + 7 x 7 patches = 50 tokens (the ViT-B/16 layout in miniature: with block size 7
and ``pre`` padding, the class token sits alone in block 0 and every other block is one row of
patches). It is saved with its image processor into a cache directory (never committed):

    nice -n 10 python scripts/evaluation/train_vit_fashion_mnist.py --out .cache/vit-fashion-mnist

``eval_vit_fashion_mnist.py`` calls this when the checkpoint is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import CLASSES, load_split

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST train-set pixel statistics (in [0, 1])
DEFAULT_OUT = Path(__file__).resolve().parents[2] / ".cache" / "vit-fashion-mnist"  # at the repository root


def build_model(hidden: int, layers: int, heads: int, seed: int):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=28, patch_size=4, num_channels=1, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=2 * hidden, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
    )
    return ViTForImageClassification(config)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    return (x - MEAN) / STD


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 0) -> torch.Tensor:
    """Random horizontal flip, and (if ``shift``) a random shift of up to ``shift`` pixels."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if not shift:
        return x
    pad = torch.nn.functional.pad(x, (shift,) * 4, value=-MEAN / STD)
    dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
    return pad[:, :, dy : dy + 28, dx : dx + 28]


@torch.no_grad()
def accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        logits = model(pixel_values=to_pixels(images[i : i + batch])).logits
        correct += (logits.argmax(-1).numpy() == labels[i : i + batch]).sum()
    return float(correct) / len(images)


def warmup_cosine(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over min(500, total / 10) steps, then cosine decay to 0 at step ``total``."""
    warmup = min(500, total // 10)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_epoch(model, opt, sched, x_train: np.ndarray, y_train: np.ndarray, batch: int, gen: torch.Generator,
                shift: int, epoch: int, t0: float) -> None:
    """One pass over the shuffled train set, printing the mean loss every 100 steps."""
    model.train()
    order = torch.randperm(len(x_train), generator=gen).numpy()
    steps = math.ceil(len(x_train) / batch)
    running = 0.0
    for i in range(steps):
        idx = order[i * batch : (i + 1) * batch]
        x = augment(to_pixels(x_train[idx]), gen, shift)
        loss = model(pixel_values=x, labels=torch.from_numpy(y_train[idx])).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (i + 1) % 100 == 0:
            print(f"epoch {epoch + 1} step {i + 1}/{steps} loss {running / 100:.4f} ({time.time() - t0:.0f}s)",
                  flush=True)
            running = 0.0


def train(out: Path, epochs: int, batch: int, lr: float, hidden: int, layers: int, heads: int, seed: int,
          threads: int | None, shift: int = 0) -> dict:
    from transformers import ViTImageProcessor

    if threads:
        torch.set_num_threads(threads)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    model = build_model(hidden, layers, heads, seed)
    params = sum(p.numel() for p in model.parameters())
    print(f"ViT: {layers} layers, hidden {hidden}, {heads} heads, {params:,} parameters; "
          f"{len(x_train)} train / {len(x_test)} test images", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = warmup_cosine(opt, epochs * math.ceil(len(x_train) / batch))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for epoch in range(epochs):
        train_epoch(model, opt, sched, x_train, y_train, batch, gen, shift, epoch, t0)
        acc = accuracy(model, x_test, y_test)
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f} ({time.time() - t0:.0f}s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    ViTImageProcessor(do_resize=False, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                      image_mean=[MEAN], image_std=[STD]).save_pretrained(out)
    meta = {
        "trained_here": True,
        "note": "trained from scratch in this project by scripts/evaluation/train_vit_fashion_mnist.py; "
                "not a pretrained model",
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist), 60,000 train images",
        "epochs": epochs, "batch_size": batch, "augmentation": f"horizontal flip, shift {shift}px", "lr": lr,
        "seed": seed, "parameters": params,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "test_accuracy_softmax": acc, "train_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shift", type=int, default=0, help="random-shift augmentation, pixels")
    a = ap.parse_args(argv)
    train(a.out, a.epochs, a.batch_size, a.lr, a.hidden, a.layers, a.heads, a.seed, a.threads, a.shift)


if __name__ == "__main__":
    main()
