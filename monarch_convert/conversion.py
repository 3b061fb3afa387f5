"""``convert`` / ``revert`` a transformers model in place, and the report of what was converted.

How it works (see ``patches/dispatch.py`` for the details):

1. Plan (``conversion_plan.py``, which only reads the model): the architecture's patcher
   (``patches/<model_type>.py``, looked up by ``config.model_type``) names the module classes
   that call transformers' attention interface; each such module is classified as converted or
   skipped (cross-attention, causal, attention bias, layer not selected), with the reason, and
   the settings are resolved. Every error is raised here, so a failure changes nothing.
2. Apply (:func:`_apply`, below): converted modules get a ``_monarch_spec`` attribute (block
   size, steps, padding, backend), and the config they read their attention implementation from
   is switched from ``<base>`` to ``monarch_<base>``, registered with transformers'
   ``AttentionInterface`` and ``AttentionMaskInterface``: the model's masks keep being built
   where the model builds them, converted modules get the (batch, seq) key-padding mask and run
   MonarchAttention, and every other module runs ``<base>`` exactly as before.

No class is replaced, no forward rebound, no weight touched: ``revert`` removes the attributes
and puts ``<base>`` back. The resolved settings are also written to the model config under
``monarch_attention``, so ``save_pretrained`` records them (``from_pretrained`` in
``loading.py`` reapplies them; plain transformers ignores the key and loads softmax attention).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from . import __version__
from . import sentence_transformers as st_models
from .config import MonarchConfig
from .conversion_plan import ConversionPlan, architecture_patch, plan_conversion
from .conversion_records import ConversionReport, ModuleRecord
from .errors import MonarchConvertError
from .patches.base import layer_index
from .patches.dispatch import (
    SPEC_ATTR,
    MonarchSpec,
    base_implementation,
    ensure_registered,
    is_monarch_implementation,
)

__all__ = [
    "ConversionReport",
    "apply_calibration",
    "calibration_of",
    "ModuleRecord",
    "conversion_report",
    "convert",
    "is_converted",
    "revert",
    "softmax",
    "stored_settings",
]

STATE_ATTR = "_monarch_conversion"
CONFIG_KEY = "monarch_attention"


@dataclass
class _State:
    """Kept on a converted model (``model._monarch_conversion``): what ``revert`` undoes and
    ``conversion_report`` reports. ``bases``: each switched config and the implementation it had."""

    plan: ConversionPlan
    bases: list[tuple[Any, str | None]]
    folded: Any = None  # calibration.folding.Folded: the correction folded in, and the weights it replaced


def _state(model: Any) -> _State | None:
    return getattr(model, STATE_ATTR, None)


def stored_settings(model: Any) -> MonarchConfig | None:
    """The settings a converted checkpoint recorded in its config (``config.monarch_attention``),
    or ``None``."""
    entry = getattr(model.config, CONFIG_KEY, None)
    if not entry:
        return None
    try:
        return MonarchConfig.from_dict(dict(entry["settings"]))
    except (KeyError, TypeError, ValueError) as e:
        raise MonarchConvertError(f"the model config's {CONFIG_KEY!r} entry is invalid: {e}") from e


def convert(
    model: Any, config: MonarchConfig | dict[str, Any] | None = None, *, verify: bool = False, **overrides: Any
) -> Any:
    """Convert ``model``'s non-causal self-attention to MonarchAttention, in place; returns ``model``.

    config: a :class:`MonarchConfig` (or a dict of its fields); keyword ``overrides`` set the
        same fields (``block_size``, ``num_steps``, ``pad_type``, ``layers``, ``backend``).
        Fields left unset come, in order, from the model's current conversion (when converting
        again), from the settings saved in its config (``config.monarch_attention``, e.g. a
        checkpoint written by a converted model and loaded with plain transformers), from the
        architecture's preset (``monarch_convert/configs/<model_type>.json``), then from
        ``config.DEFAULTS``. ``block_size="auto"`` is resolved to an integer here.
    layers: indices in the stack of convertible layers (for BART, the encoder's). Indices the
        model lacks are an error when given by the caller, and ignored when they come from a
        preset (the RoBERTa-base preset on a smaller RoBERTa).

    A sentence-transformers ``SentenceTransformer`` is accepted too: its transformer module(s) are
    converted, every other module (pooling, normalisation) is left as it is; the same holds for
    ``revert``, ``softmax``, ``is_converted`` and ``conversion_report`` (``sentence_transformers.py``).

    Idempotent: converting a converted model again with no new settings changes nothing; with
    new settings, it is reconverted with them. Cross-attention, causal self-attention and
    modules whose scores carry a bias are never converted (listed as skipped, with the reason).
    Raises :class:`MonarchConvertError` for an unsupported ``model_type``, invalid settings, or
    settings under which no module at all would be converted (``layers=[]``, a decoder only).

    verify: run the model on a small dummy input of its modality (``patches/inputs.py``) as the
        original and converted with an exact block size (1; the whole sequence beyond 256
        positions), and compare each converted module's output (``verification.py``); a
        difference is a :class:`MonarchConvertError` naming the module, and the model is left
        as it was before this call. Costs about two forwards of one dummy row.

    Training works (gradients flow through MonarchAttention), but converted modules apply no
    dropout to attention weights (there is no attention matrix to drop from); ``output_attentions``
    gives ``None`` for them. Switching the attention implementation afterwards
    (``model.set_attn_implementation``) bypasses the conversion: ``revert`` first.
    """
    if st_models.is_sentence_transformer(model):  # its transformer module(s), each as below
        return st_models.convert(model, config, overrides, verify)
    patch = architecture_patch(model)  # first: stored_settings needs a model with a config
    state = _state(model)
    previous = state.plan.settings if state is not None else stored_settings(model)
    plan = plan_conversion(model, patch, previous, config, overrides)
    # A calibration belongs to the settings it was fitted for: kept when they stay the same.
    calibration = state.folded.calibration if state is not None and state.folded is not None else None
    # Everything is decided above, before anything is changed, so that a failure leaves the model
    # as it was (a converted model keeps its conversion).
    saved_entry = getattr(model.config, CONFIG_KEY, None)
    revert(model)
    _apply(model, plan)
    # Verified before a calibration is folded in: the check compares with softmax at an exact block size.
    if verify:
        _verify(model, patch, plan, state.plan.settings if state is not None else None, saved_entry)
    if calibration is not None and plan.settings == state.plan.settings:
        apply_calibration(model, calibration)
    return model


def _verify(model: Any, patch: Any, plan: ConversionPlan, previous: MonarchConfig | None, entry: Any) -> None:
    """``verify=True``: a failed check puts the model back as it was before this ``convert``."""
    from .verification import verify_conversion

    try:
        verify_conversion(model, plan.to_convert, patch.dummy_inputs, plan.max_length)
    except MonarchConvertError:
        revert(model)
        if previous is not None:
            convert(model, previous)
        elif entry is not None:
            setattr(model.config, CONFIG_KEY, entry)
        raise


def _apply(model: Any, plan: ConversionPlan) -> None:
    """Mark the planned modules, switch their configs to ``monarch_<base>``, record the settings."""
    s = plan.settings
    for name, module in plan.to_convert:
        own = s.for_layer(layer_index(name))  # the layer's own settings over the global ones
        spec = MonarchSpec(own.block_size, own.num_steps, s.pad_type, s.backend, name, own.exact_diagonal,
                           own.global_keys)
        setattr(module, SPEC_ATTR, spec)
    # Modules of one model usually share one config: switch each config once.
    configs = {id(module.config): module.config for _, module in plan.to_convert}
    bases = _switch_implementations(configs.values())
    setattr(model.config, CONFIG_KEY, {"monarch_convert_version": __version__, "settings": s.to_dict()})
    setattr(model, STATE_ATTR, _State(plan, bases))


def _switch_implementations(configs: Iterable[Any]) -> list[tuple[Any, str | None]]:
    """Switch each config from ``<base>`` to ``monarch_<base>``; each config and its base."""
    bases = []
    for config in configs:
        current = config._attn_implementation
        base = base_implementation(current) if is_monarch_implementation(current) else current
        # Set the internal field: the public setter would also walk sub-configs, which we leave alone.
        config._attn_implementation_internal = ensure_registered(base)
        bases.append((config, base))
    return bases


def revert(model: Any) -> Any:
    """Undo :func:`convert` in place (outputs bit-identical to before); returns ``model``.
    A model that is not converted is returned unchanged."""
    if st_models.is_sentence_transformer(model):
        return st_models.revert(model)
    state = _state(model)
    if state is None:
        return model
    if state.folded is not None:
        state.folded.unfold()
    for _, module in state.plan.to_convert:
        if SPEC_ATTR in module.__dict__:
            delattr(module, SPEC_ATTR)
    for config, base in state.bases:
        config._attn_implementation_internal = base
    if hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    delattr(model, STATE_ATTR)
    return model


@contextmanager
def softmax(model: Any) -> Iterator[Any]:
    """Run ``model`` on softmax attention inside the ``with`` block, then convert it back with the
    same settings (``revert`` is bit-identical, so the softmax outputs are the original model's).
    A model that is not converted is left as it is.

        with monarch_convert.softmax(model):
            reference = model(**inputs)
    """
    if st_models.is_sentence_transformer(model):
        with st_models.softmax(model):
            yield model
        return
    state = _state(model)
    if state is None:
        yield model
        return
    revert(model)
    try:
        yield model
    finally:
        convert(model, state.plan.settings)
        if state.folded is not None:
            apply_calibration(model, state.folded.calibration)


@contextmanager
def base_attention(model: Any) -> Iterator[Any]:
    """:func:`softmax` at the cost of one attribute per switched config, for a converted model
    without a folded calibration (others go through :func:`softmax`): inside the block the
    configs name the base implementation again, so transformers calls the base attention and
    mask functions for every module, exactly as on the reverted model (the specs ``revert``
    removes are read by the ``monarch_*`` functions alone). The conversion stays in place
    (``is_converted`` is True inside). Healing's teacher switches every step, and ``softmax``'s
    revert and conversion again took 0.7 ms of host time per step on the H200."""
    state = _state(model)
    if state is None or state.folded is not None:  # a SentenceTransformer keeps its state on its modules
        with softmax(model):
            yield model
        return
    names = [(config, config._attn_implementation_internal) for config, _ in state.bases]
    for config, base in state.bases:
        config._attn_implementation_internal = base
    try:
        yield model
    finally:
        for config, name in names:
            config._attn_implementation_internal = name


def is_converted(model: Any) -> bool:
    if st_models.is_sentence_transformer(model):
        return st_models.is_converted(model)
    return _state(model) is not None


def apply_calibration(model: Any, calibration: Any) -> Any:
    """Fold ``calibration`` (a :class:`~monarch_convert.calibration.correction.Calibration`) into
    the output projections of a converted model, in place (replacing any folded before);
    ``revert`` restores the original weights bit for bit. Returns ``model``."""
    from .calibration.folding import fold

    state = _state(model)
    if state is None:
        raise MonarchConvertError("the model is not converted: convert it before applying a calibration")
    if state.folded is not None:
        state.folded.unfold()
        state.folded = None
    state.folded = fold(model, architecture_patch(model), calibration)
    getattr(model.config, CONFIG_KEY)["calibration"] = calibration.describe()
    return model


def calibration_of(model: Any) -> Any:
    """The calibration folded into ``model`` (``None`` if none)."""
    state = _state(model)
    return state.folded.calibration if state is not None and state.folded is not None else None


def conversion_report(model: Any, seq_len: int | None = None) -> ConversionReport:
    """The :class:`ConversionReport` of a converted model; FLOPs at ``seq_len`` (default: the
    model's maximum sequence length, the one ``block_size="auto"`` is computed from)."""
    if st_models.is_sentence_transformer(model):
        return st_models.conversion_report(model, seq_len)
    state = _state(model)
    if state is None:
        raise MonarchConvertError("the model is not converted: call monarch_convert.convert(model) first")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise MonarchConvertError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    plan = state.plan
    return ConversionReport(
        model_type=plan.model_type,
        source_model=getattr(model.config, "name_or_path", None) or None,
        settings=plan.settings,
        modules=plan.records,
        seq_len=seq_len or plan.max_length,
        max_length=plan.max_length,
    )
