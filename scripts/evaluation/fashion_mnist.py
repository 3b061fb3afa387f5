"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files, MIT licence).

Shared by ``train_vit_fashion_mnist.py`` and ``eval_vit_fashion_mnist.py``. The files are read
where the package installs them; nothing is copied into the repository.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

FASHION_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def ensure_installed() -> Path:
    """Install the Debian package if its files are missing (needs apt and root)."""
    if not any((FASHION_DIR / name).exists() for name in ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte")):
        if shutil.which("apt-get") is None:
            raise SystemExit(
                f"Fashion-MNIST not found under {FASHION_DIR}; install the Debian package dataset-fashion-mnist"
            )
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True)
    return FASHION_DIR


def _read(name: str, offset: int) -> np.ndarray:
    path = FASHION_DIR / name
    raw = gzip.open(f"{path}.gz").read() if Path(f"{path}.gz").exists() else path.read_bytes()
    return np.frombuffer(raw, dtype=np.uint8, offset=offset)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels int64 (n,)) for ``split`` in {"train", "test"}."""
    ensure_installed()
    images_file, labels_file = FILES[split]
    images = _read(images_file, 16).reshape(-1, 28, 28)
    labels = _read(labels_file, 8).astype(np.int64)
    assert len(images) == len(labels)
    return images, labels
