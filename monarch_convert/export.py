"""What ``monarch-convert MODEL --out DIR`` does: load, convert, report, write DIR atomically."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from .config import MonarchConfig
from .dtypes import check_dtype_name
from .errors import MonarchConvertError
from .interrupts import during
from .output_dir import staged_output, write_errors
from .stop_points import stop_point

if TYPE_CHECKING:
    import torch

    from .healing.export import HealOptions

REPORT_FILE = "conversion.json"


def check_device(device: str, backend: Optional[str]) -> None:
    """Refuse, before loading anything, a device the model cannot be converted and saved on: one
    that does not exist here, ``meta`` (no weights to save), and ``--backend triton`` off CUDA
    (the saved model would fail on its first forward)."""
    import torch

    from .kernels import ops
    from .loading import failure_reason

    try:
        probe = torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as e:
        raise MonarchConvertError(f"--device {device!r} cannot be used: {failure_reason(e)}") from e
    if probe.is_meta:
        raise MonarchConvertError("--device meta holds no weights, so there is nothing to save: use cpu or cuda")
    if backend == "triton":
        try:
            ops.uses_triton(probe, backend)  # the op's own rule: CUDA, or Triton's CPU interpreter
        except (ValueError, RuntimeError) as e:
            raise MonarchConvertError(f"--backend triton cannot run on --device {device}: {e}") from e


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
    calibration: Optional[dict] = None,
    verify: bool = True,
    heal: Optional[HealOptions] = None,
) -> dict:
    """Convert ``source`` (Hub id or folder; None = the embedded default model) into ``out_dir``.

    Writes the converted checkpoint, the source's tokenizer or image processor (if it has one),
    and ``conversion.json``; returns that report as a dict. A sentence-transformers source (with
    ``modules.json``) is written with all its modules, so that ``SentenceTransformer(out_dir)`` loads it.
    ``verify``: check the conversion on a dummy input first (``convert(..., verify=True)``).
    ``out_dir`` is checked before the model is loaded and replaced only at the end (``output_dir.staged_output``).
    calibration: ``monarch_convert.calibrate``'s arguments (``data``, ``max_flops`` or
    ``min_fidelity``, ``samples``): the settings are calibrated on that data, the correction is
    written beside the weights, and the calibration report goes into ``conversion.json``.
    With ``heal``, the converted (and calibrated) model is healed before it is saved
    (``healing/export.py``): DIR then holds the healed weights, and the report a ``healing`` entry.
    """
    from .default_model import DEFAULT_MODEL_NAME

    out_dir = Path(out_dir)
    check_dtype_name(dtype, "--dtype")
    name = DEFAULT_MODEL_NAME if source is None else source
    with during(f"converting {name} into {out_dir}", f"{out_dir} was left as it was"):
        with staged_output(out_dir, overwrite, echo) as staging:
            check_device(device, config.backend if config is not None else None)
            heal = _checked_heal(heal)
            model, preprocessor, report = _load_and_convert(
                source, name, config, dtype, device, seq_len, echo, calibration, verify
            )
            if heal is not None:
                from .healing.export import heal_converted

                report["healing"] = heal_converted(model, preprocessor, heal, out_dir, echo)
            start = time.perf_counter()
            echo(f"Saving to {out_dir} ...")
            with write_errors(out_dir):
                written = _save(staging, model, preprocessor, report)
        echo(f"Saved in {time.perf_counter() - start:.1f}s: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")
        echo(written)
    if heal is not None:
        from .healing.export import remove_checkpoint

        remove_checkpoint(heal, out_dir)
    return report


def _checked_heal(heal: Optional[HealOptions]) -> Optional[HealOptions]:
    if heal is None:
        return None
    from .healing.export import check

    return check(heal)


def _load_and_convert(source, name, config, dtype, device, seq_len, echo,
                      calibration=None, verify=True) -> tuple[Any, Any, dict]:
    """The converted model, the source's preprocessor (or None) and the conversion report."""
    from . import conversion_report, convert
    from .default_model import default_model_path

    path = default_model_path() if source is None else source
    start = time.perf_counter()
    echo(f"Loading {name} ...")
    model, preprocessor = _load_source(path, name, dtype, device, echo)
    echo(f"Loaded {type(model).__name__} in {time.perf_counter() - start:.1f}s")
    stop_point("loaded")

    embed = _drift_embeddings(model, preprocessor, default=source is None)
    before = embed() if embed is not None else None
    start = time.perf_counter()
    convert(model, config, verify=verify)
    if verify:
        echo(f"Verified in {time.perf_counter() - start:.1f}s: on a dummy input, every converted module at an exact "
             "block size gives the original's outputs (--no-verify skips this)")
    calibrated = _calibrate(model, preprocessor, calibration, seq_len, echo) if calibration else None
    report = conversion_report(model, seq_len=seq_len)
    echo(report.format_table())
    if embed is not None:
        echo(format_embedding_drift(before, embed()))
    return model, preprocessor, {**report.to_dict(), **({"calibration": calibrated} if calibrated else {})}


def _calibrate(model: Any, preprocessor: Any, options: dict, seq_len: Optional[int], echo) -> dict:
    """``monarch_convert.calibrate`` on the converted model (a SentenceTransformer's transformer,
    with its tokenizer); its report as a dict."""
    from . import sentence_transformers as st_models
    from .calibration.run import calibrate

    if st_models.is_sentence_transformer(model):
        model, preprocessor = st_models.single_transformer(model), model.tokenizer
    echo(f"Calibrating on {options['data']} ...")
    report = calibrate(model, options["data"], preprocessor, seq_len=seq_len,
                       **{k: v for k, v in options.items() if k != "data" and v is not None})
    echo(report.format_table())
    return report.to_dict()


def _load_source(path: str, name: str, dtype: str, device: str, echo: Callable[..., None]) -> tuple[Any, Any]:
    """The unconverted model and its preprocessor. A sentence-transformers source is loaded as a
    ``SentenceTransformer`` (no separate preprocessor: it saves its own tokenizer with its modules)."""
    from . import sentence_transformers as st_models
    from .dtypes import torch_dtype
    from .loading import load_config, load_source_model
    from .preprocessors import load_preprocessor

    # The config first: an unreachable Hub is then one error after one round of huggingface_hub's
    # retries, not a second round for the modules.json probe below (it doubled the wait, to 55 s).
    if not os.path.isdir(os.path.expanduser(path)):
        load_config(path, {})
    if st_models.is_source(path):
        if st_models.available():
            model = st_models.load(path, device=device, dtype=torch_dtype(dtype) or "auto")
            for transformer in st_models.transformer_models(model):
                transformer.config.name_or_path = name
            return model, None
        echo(f"note: {name} is a sentence-transformers model, but sentence-transformers is not installed: writing "
             f"its transformer alone ({st_models.INSTALL_HINT} to keep its pooling and normalisation modules)")
    model = load_source_model(path, dtype=dtype, device=device)
    model.config.name_or_path = name  # the report and the saved config name the model, not a cache path
    return model, load_preprocessor(path)


def _drift_embeddings(model: Any, preprocessor: Any, default: bool) -> Optional[Callable[[], Any]]:
    """What the embedding drift is measured with: a SentenceTransformer's own embeddings, or the
    embedded default's (mean pooling, normalised) when sentence-transformers is missing; else None."""
    from . import sentence_transformers as st_models
    from .default_model import SENTENCES, sentence_embeddings

    if st_models.is_sentence_transformer(model):
        return lambda: st_models.embeddings(model, SENTENCES)
    return (lambda: sentence_embeddings(model, preprocessor)) if default else None


def _save(staging: Path, model: Any, preprocessor: Any, report: dict) -> str:
    """Write everything into ``staging``; the summary line of the preprocessor's (or the
    SentenceTransformer's modules') files."""
    from . import sentence_transformers as st_models
    from .calibration.saving import save_pretrained
    from .preprocessors import describe

    if st_models.is_sentence_transformer(model):
        written = st_models.save(model, staging)
    else:
        save_pretrained(model, staging)  # the original weights; a calibration's correction in its own file
        before = {p.name for p in staging.iterdir()}
        if preprocessor is not None:
            preprocessor.save_pretrained(staging)
        written = describe(preprocessor, [p.name for p in staging.iterdir() if p.name not in before])
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return written


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
