"""Load checkpoints: ``from_pretrained`` (converted, from a Hub id or folder) and the plain
source loader the CLI uses.

A converted model's ``save_pretrained`` writes unchanged weights and a config.json with one extra
key, ``monarch_attention`` (the resolved settings). Plain transformers ignores that key and loads
the original softmax model; :func:`from_pretrained` loads the model and reapplies the settings.
"""

from __future__ import annotations

import os
from typing import Any

from .config import MonarchConfig
from .dtypes import torch_dtype
from .errors import MonarchConvertError

# from_pretrained keyword arguments that also concern the config file.
_CONFIG_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "proxies",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
)


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or os.path.isabs(path)


def load_config(path: str, hf_kwargs: dict[str, Any]):
    """The transformers config at ``path`` (Hub id or folder); a one-line error where there is none."""
    from transformers import AutoConfig

    if _looks_local(path) and not os.path.isdir(os.path.expanduser(path)):
        raise MonarchConvertError(f"no such folder: {path!r} (give a local checkpoint folder or a Hub id)")

    try:
        return AutoConfig.from_pretrained(path, **{k: hf_kwargs[k] for k in _CONFIG_KWARGS if k in hf_kwargs})
    except (OSError, ValueError, KeyError) as e:
        raise MonarchConvertError(f"cannot load a model config from {path!r}: {failure_reason(e)}") from e


def failure_reason(error: BaseException) -> str:
    """Why loading failed, in one line: that the Hub could not be reached (or, offline, that the
    files are not cached), else the first line of ``error``'s message (transformers' are often
    paragraphs), or its type."""
    unreachable = _hub_unreachable(error)
    if unreachable:
        return unreachable
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hub_unreachable(error: BaseException) -> str | None:
    """huggingface_hub raises ``LocalEntryNotFoundError`` (somewhere in the chain of causes) when
    it could not reach the Hub, after its retries, nor find the files in its cache."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    chain: list[BaseException] = []
    while error is not None and error not in chain:  # "not in": a chain may loop back
        chain.append(error)
        error = error.__cause__ or error.__context__
    if not any(isinstance(e, LocalEntryNotFoundError) for e in chain):
        return None
    if constants.HF_HUB_OFFLINE:
        return "the files are not in the local Hub cache, and HF_HUB_OFFLINE is set"
    return f"the Hub ({constants.ENDPOINT}) could not be reached, and the files are not in the local cache"


def model_class_for(config: Any) -> type:
    """The class to load a checkpoint with: ``config.architectures[0]`` when transformers has it
    (``BertForQuestionAnswering``, ``ViTForImageClassification``, ...), else ``AutoModel``."""
    import transformers
    from transformers import AutoModel, PreTrainedModel

    for name in getattr(config, "architectures", None) or ():
        try:
            cls = getattr(transformers, name)
        except (AttributeError, ImportError, RuntimeError):
            continue
        if isinstance(cls, type) and issubclass(cls, PreTrainedModel):
            return cls
    return AutoModel


def _check_supported(config: Any) -> None:
    from .patches.registry import get_patch, unsupported_message

    if get_patch(getattr(config, "model_type", None)) is None:
        raise MonarchConvertError(unsupported_message(getattr(config, "model_type", None)))


def _load(path: str, model_class: Any, hf_kwargs: dict[str, Any]):
    config = hf_kwargs.get("config") or load_config(path, hf_kwargs)
    _check_supported(config)
    cls = model_class or model_class_for(config)
    try:
        # The config is read again by from_pretrained, so that config-changing keyword arguments
        # (num_labels=..., and the like) keep working as in transformers.
        return cls.from_pretrained(path, **hf_kwargs)
    except (OSError, ValueError) as e:
        raise MonarchConvertError(f"cannot load {cls.__name__} from {path!r}: {failure_reason(e)}") from e


def from_pretrained(
    pretrained_model_name_or_path: str,
    *,
    monarch_config: MonarchConfig | dict[str, Any] | None = None,
    model_class: Any = None,
    **hf_kwargs: Any,
) -> Any:
    """Load a checkpoint with MonarchAttention, from a Hub id or a local folder.

    A checkpoint saved by a converted model is loaded with its saved settings, and gives the
    outputs of the model that was saved. Any other checkpoint of a supported architecture is
    converted on load (settings from ``monarch_config``, then the architecture's preset). A
    calibrated checkpoint's correction (``monarch_calibration.safetensors``) is folded in, unless
    ``monarch_config`` changes the settings it was fitted for.
    monarch_config: settings that override the saved ones (a ``MonarchConfig`` or a dict).
    model_class: the class to load with (a model class or an ``AutoModelFor...``); by default the
        checkpoint's ``architectures`` entry, else ``AutoModel``.
    hf_kwargs: passed to transformers' ``from_pretrained`` (``dtype``, ``revision``, ``token``,
        ``cache_dir``, ``device_map``, ...).
    A sentence-transformers model (a folder or Hub repo with ``modules.json``) is loaded as a
    converted ``SentenceTransformer`` with every module, unless ``model_class`` is given; then
    ``hf_kwargs`` that ``SentenceTransformer`` takes (``device``, ``revision``, ``token``, ...) go to
    it, the others (``dtype``, ...) to its transformer's ``from_pretrained``.
    Raises :class:`MonarchConvertError` for a missing checkpoint or an unsupported architecture.
    """
    from . import sentence_transformers as st_models

    path = str(pretrained_model_name_or_path)
    hub_kwargs = {k: hf_kwargs[k] for k in ("revision", "token", "cache_dir") if k in hf_kwargs}
    if model_class is None and st_models.is_source(path, **hub_kwargs):
        return st_models.from_pretrained(path, monarch_config, **hf_kwargs)
    return convert_loaded(_load(path, model_class, dict(hf_kwargs)), path, monarch_config, hf_kwargs)


def convert_loaded(model: Any, path: str, monarch_config: Any, hf_kwargs: dict[str, Any]) -> Any:
    """Convert a model loaded from ``path`` with its saved settings (``monarch_config`` over them),
    and fold back the calibration it recorded, if any."""
    from .calibration.saving import reapply
    from .conversion import CONFIG_KEY, convert, stored_settings

    recorded = (getattr(model.config, CONFIG_KEY, None) or {}).get("calibration")
    saved = stored_settings(model)
    convert(model, monarch_config)
    # A calibrated checkpoint: its correction, folded in memory (kept only with the saved settings).
    reapply(model, path, recorded, saved, hf_kwargs)
    return model


def load_source_model(
    path: str, dtype: str = "auto", device: str = "cpu", model_class: Any = None, **hf_kwargs: Any
) -> Any:
    """The unconverted model at ``path`` (Hub id or folder), in eval mode, for the CLI.

    dtype: ``"auto"`` (the checkpoint's), ``"float32"``, ``"float16"`` or ``"bfloat16"``.
    """
    dtype = torch_dtype(dtype) or "auto"
    model = _load(str(path), model_class, {"dtype": dtype, **hf_kwargs})
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise MonarchConvertError(f"cannot move the model to device {device!r}: {e}") from e
    return model.eval()
