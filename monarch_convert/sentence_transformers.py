"""sentence-transformers models: convert a ``SentenceTransformer``'s transformer module(s), and write
and load folders that ``SentenceTransformer(DIR)`` loads with every module.

A ``SentenceTransformer`` is a sequence of modules: one ``Transformer`` module wrapping a
transformers model (``st_model[0].auto_model``), then ``Pooling``, ``Dense``, ``Normalize``, ...
Conversion acts on the wrapped transformers models only (``conversion.convert``, in place), so
every other module is untouched, and ``SentenceTransformer.save`` writes them all
(``modules.json``, ``1_Pooling/``, ``2_Normalize/``, ``sentence_bert_config.json``, ...). The
transformer's ``config.json`` carries the ``monarch_attention`` settings like any converted
checkpoint: plain ``SentenceTransformer(DIR)`` loads the softmax original (the weights are the
original ones), and :func:`from_pretrained` the converted model.

``sentence_transformers`` is imported only here, and only when a SentenceTransformer or a folder
with ``modules.json`` is at hand: the rest of the package never needs it.
"""

from __future__ import annotations

import inspect
import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .errors import MonarchConvertError

# What makes a folder (or Hub repo) a sentence-transformers model.
MODULES_FILE = "modules.json"
INSTALL_HINT = "pip install 'monarch-convert[sentence-transformers]'"


def is_sentence_transformer(obj: Any) -> bool:
    """Whether ``obj`` is a ``SentenceTransformer`` (False, at no cost, when the package was never
    imported: then nothing can be one)."""
    module = sys.modules.get("sentence_transformers")
    return module is not None and isinstance(obj, module.SentenceTransformer)


def transformer_models(st_model: Any) -> list[Any]:
    """The transformers models that ``st_model``'s Transformer modules wrap (those nested in a
    ``Router`` included), in order."""
    from transformers import PreTrainedModel

    found: list[Any] = []
    for module in st_model.modules():
        model = getattr(module, "auto_model", None)
        if isinstance(model, PreTrainedModel) and not any(model is seen for seen in found):
            found.append(model)
    if not found:
        raise MonarchConvertError("this SentenceTransformer has no Transformer module: nothing to convert")
    return found


def single_transformer(st_model: Any) -> Any:
    """The transformers model of ``st_model``'s first module, when it is its only Transformer (the
    shape of nearly every embedding model); what calibration and the evaluator work on."""
    models = transformer_models(st_model)
    if len(models) != 1 or getattr(st_model[0], "auto_model", None) is not models[0]:
        raise MonarchConvertError(
            f"this needs a SentenceTransformer whose first module is its only Transformer; this one has {len(models)}"
        )
    return models[0]


# ------------------------------------------------------------ convert, revert, report, softmax


def convert(st_model: Any, config: Any, overrides: dict[str, Any], verify: bool = False) -> Any:
    """``conversion.convert`` on each transformer of ``st_model``; returns ``st_model``. A failure
    leaves every transformer as it was (converted ones keep their settings, loaded ones the
    settings their config carried)."""
    from . import conversion

    _refuse_packed_inputs(st_model)
    models = transformer_models(st_model)
    before = [(conversion.conversion_report(m).settings if conversion.is_converted(m) else None,
               getattr(m.config, conversion.CONFIG_KEY, None)) for m in models]
    done = []
    try:
        for model in models:
            conversion.convert(model, config, verify=verify, **overrides)
            done.append(model)
    except BaseException:
        for model, (settings, entry) in zip(done, before):
            conversion.revert(model)
            if settings is not None:
                conversion.convert(model, settings)
            elif entry is not None:
                setattr(model.config, conversion.CONFIG_KEY, entry)
        raise
    return st_model


def _refuse_packed_inputs(st_model: Any) -> None:
    """sentence-transformers >= 6 packs the sequences of a batch into one, unpadded, when the
    model runs on flash attention (``unpad_inputs``): converted attention would then mix sequences."""
    for index, module in enumerate(st_model):
        if getattr(module, "can_flatten_inputs", False):
            raise MonarchConvertError(
                f"module {index} of the SentenceTransformer packs sequences without padding for flash attention, "
                f"which MonarchAttention cannot run: set model[{index}].unpad_inputs = False (or load it with "
                "model_kwargs={'attn_implementation': 'sdpa'}) before converting"
            )


def revert(st_model: Any) -> Any:
    from . import conversion

    for model in transformer_models(st_model):
        conversion.revert(model)
    return st_model


def is_converted(st_model: Any) -> bool:
    from . import conversion

    return any(conversion.is_converted(model) for model in transformer_models(st_model))


def conversion_report(st_model: Any, seq_len: int | None) -> Any:
    """The report of ``st_model``'s converted transformer (one: a model with several reports each
    through ``conversion_report(module.auto_model)``)."""
    from . import conversion

    models = transformer_models(st_model)
    converted = [model for model in models if conversion.is_converted(model)]
    if len(converted) > 1:
        raise MonarchConvertError(
            f"this SentenceTransformer has {len(converted)} converted transformers: call "
            "monarch_convert.conversion_report(module.auto_model) for each"
        )
    return conversion.conversion_report(converted[0] if converted else models[0], seq_len)


@contextmanager
def softmax(st_model: Any) -> Iterator[Any]:
    from . import conversion

    with ExitStack() as stack:
        for model in transformer_models(st_model):
            stack.enter_context(conversion.softmax(model))
        yield st_model


# ------------------------------------------------------------------------ folders and loading


def is_source(path: str, **hub_kwargs: Any) -> bool:
    """Whether the folder or Hub repo ``path`` is a sentence-transformers model (has ``modules.json``).
    A Hub repo that cannot be reached counts as not one: loading it then reports why."""
    from transformers.utils import cached_file

    from .loading import _looks_local

    local = os.path.expanduser(path)
    if os.path.isdir(local) or _looks_local(path):
        return os.path.isfile(os.path.join(local, MODULES_FILE))

    try:
        return bool(cached_file(path, MODULES_FILE, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False, **hub_kwargs))
    except Exception:  # an invalid id, a missing repo: not one (the transformers loader says why)
        return False


def available() -> bool:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def load(path: str, **kwargs: Any) -> Any:
    """``SentenceTransformer(path)``: keyword arguments it takes (``device``, ``revision``, ``token``,
    ``cache_folder``, ...) go to it, the others (``dtype``, ...) to the transformer's
    ``from_pretrained`` (its ``model_kwargs``)."""
    from .loading import failure_reason

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MonarchConvertError(
            f"{path} is a sentence-transformers model: {INSTALL_HINT} to load it with its modules "
            "(or pass model_class=transformers.AutoModel for the transformer alone)"
        ) from None
    own = inspect.signature(SentenceTransformer.__init__).parameters
    model_kwargs = dict(kwargs.pop("model_kwargs", None) or {})
    model_kwargs.update({k: kwargs.pop(k) for k in list(kwargs) if k not in own})
    try:
        return SentenceTransformer(str(path), model_kwargs=model_kwargs or None, **kwargs).eval()
    except (OSError, ValueError, KeyError) as e:
        raise MonarchConvertError(f"cannot load SentenceTransformer from {path!r}: {failure_reason(e)}") from e


def from_pretrained(path: str, monarch_config: Any, **kwargs: Any) -> Any:
    """The SentenceTransformer at ``path``, converted (with the settings its transformer's config
    saved, ``monarch_config`` over them; a calibration saved beside it folded back in)."""
    from .loading import convert_loaded

    st_model = load(path, **kwargs)
    _refuse_packed_inputs(st_model)
    models = transformer_models(st_model)
    if len(models) > 1:  # no calibration: monarch-convert calibrates single-transformer models only
        return convert(st_model, monarch_config, {})
    convert_loaded(models[0], path, monarch_config, kwargs)
    return st_model


def save(st_model: Any, folder: Path) -> str:
    """Write every module of ``st_model`` into ``folder`` (no model card: ``monarch-convert upload``
    writes its own); the summary line of what was written beside the transformer's weights."""
    from .conversion import calibration_of

    st_model.save(str(folder), create_model_card=False)  # the transformer's original weights, as save_pretrained
    calibrations = [c for c in map(calibration_of, transformer_models(st_model)) if c is not None]
    if calibrations:  # a calibrated transformer (always the first module: see ``single_transformer``)
        calibrations[0].save(folder)
    weights = {"config.json", "model.safetensors", "model.safetensors.index.json"}
    written = sorted(p.name for p in folder.iterdir() if p.name not in weights and not p.name.startswith("model-"))
    return f"Wrote the SentenceTransformer's modules and tokenizer: {', '.join(written)}"


def embeddings(st_model: Any, sentences: Sequence[str]) -> torch.Tensor:
    """``st_model``'s embeddings of ``sentences`` (its own pooling, dense and normalisation
    modules), L2-normalised, float32 on the CPU."""
    with torch.no_grad():
        out = st_model.encode(list(sentences), convert_to_tensor=True, show_progress_bar=False)
    return torch.nn.functional.normalize(out.float().cpu(), dim=-1)
