"""What ``monarch-convert MODEL --out DIR`` does: load, convert, report, write DIR atomically."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from .config import MonarchConfig
from .dtypes import check_dtype_name
from .errors import MonarchConvertError

if TYPE_CHECKING:
    import torch

REPORT_FILE = "conversion.json"


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Fail before any heavy work if DIR cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise MonarchConvertError(f"--out {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise MonarchConvertError(f"--out {out_dir} is not empty (pass --overwrite to replace it)")


@contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that replaces it only if the block succeeds, so a
    failure at any point leaves ``out_dir`` exactly as it was."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(old / "previous")
            staging.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_preprocessor(source: str) -> Any:
    """The source's tokenizer or image processor, or None if it ships neither."""
    from transformers import AutoImageProcessor, AutoTokenizer

    for auto in (AutoTokenizer, AutoImageProcessor):
        try:
            return auto.from_pretrained(source)
        except Exception:  # any failure means "this source has none of that kind"
            continue
    return None


def export_checkpoint(
    source: Optional[str],
    out_dir: Path | str,
    config: Optional[MonarchConfig] = None,
    *,
    dtype: str = "auto",
    device: str = "cpu",
    seq_len: Optional[int] = None,
    overwrite: bool = False,
    echo: Callable[..., None] = print,
) -> dict:
    """Convert ``source`` (Hub id or folder; None = the embedded default model) into ``out_dir``.

    Writes the converted checkpoint, the source's tokenizer or image processor, and
    ``conversion.json``; returns that report as a dict.
    """
    from . import conversion_report, convert
    from .default_model import DEFAULT_MODEL_NAME, default_model_path, sentence_embeddings
    from .loading import load_source_model

    out_dir = Path(out_dir)
    check_dtype_name(dtype, "--dtype")
    check_out_dir(out_dir, overwrite)
    is_default = source is None
    name = DEFAULT_MODEL_NAME if is_default else source
    path = default_model_path() if is_default else source

    start = time.perf_counter()
    echo(f"Loading {name} ...")
    model = load_source_model(path, dtype=dtype, device=device)
    model.config.name_or_path = name  # the report and the saved config name the model, not a cache path
    preprocessor = load_preprocessor(path)
    echo(f"Loaded {type(model).__name__} in {time.perf_counter() - start:.1f}s")

    before = sentence_embeddings(model, preprocessor) if is_default else None
    convert(model, config)
    report = conversion_report(model, seq_len=seq_len)
    report_dict = report.to_dict()
    echo(report.format_table())
    if before is not None:
        echo(format_embedding_drift(before, sentence_embeddings(model, preprocessor)))

    start = time.perf_counter()
    echo(f"Saving to {out_dir} ...")
    with staged_dir(out_dir) as staging:
        model.save_pretrained(staging)
        if preprocessor is not None:
            preprocessor.save_pretrained(staging)
        (staging / REPORT_FILE).write_text(json.dumps(report_dict, indent=2) + "\n")
    echo(f"Saved in {time.perf_counter() - start:.1f}s: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")
    return report_dict


def format_embedding_drift(before: torch.Tensor, after: torch.Tensor) -> str:
    """Cosine similarity of each built-in sentence's embedding, original vs converted."""
    from .default_model import SENTENCES

    cosines = (before * after).sum(-1).tolist()
    lines = ["Sentence embeddings, cosine(original, converted):"]
    for text, cos in zip(SENTENCES, cosines):
        short = text if len(text) <= 60 else text[:57] + "..."
        lines.append(f"  {cos:.4f}  {short}")
    lines.append(f"  {sum(cosines) / len(cosines):.4f}  (mean over {len(cosines)} sentences)")
    return "\n".join(lines)
