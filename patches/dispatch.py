"""The attention and mask implementations that conversion registers with transformers.

transformers picks an attention function and a mask function by one name per config
(``config._attn_implementation``), shared by every attention module of the model. Conversion
renames it from ``<base>`` (``"sdpa"``, ``"eager"``, ...) to ``"monarch_<base>"``, registered in
both ``AttentionInterface`` and ``AttentionMaskInterface`` to the two functions below:

- :func:`monarch_mask` is called where the model builds its masks. When the mask is a pure key-
  padding mask (bidirectional self-attention, no cache, no extra pattern) it returns a
  :class:`MonarchMask`: the (batch, seq) padding mask, plus what is needed to build the base
  implementation's mask lazily, only if a module that was not converted asks for it (so no
  N x N mask exists when every consumer is converted). Any other mask (causal, cross-attention,
  custom patterns) is returned exactly as the base implementation would build it.
- :func:`monarch_attention_forward` is called by every attention module. A module that carries a
  :class:`MonarchSpec` (set by ``convert``) runs MonarchAttention with the key-padding mask; any
  other module runs the base implementation's function with the base mask, unchanged.

The base name is recovered from the ``monarch_<base>`` name itself, so nothing extra is stored
on (or serialised with) the config, and ``revert`` only has to put the base name back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import MonarchConvertError
from ..kernels import ops

PREFIX = "monarch"
SPEC_ATTR = "_monarch_spec"
# Calibration (monarch_convert/calibration/) sets this on a converted module for the length of its
# passes: a callable ``(spec, q, k, v, key_padding, scale) -> output`` run instead of the op, which
# sees the module's exact inputs (its error and fitting statistics) and says what flows on.
PROBE_ATTR = "_monarch_probe"


def implementation_name(base: str | None) -> str:
    """``"monarch_<base>"`` (``"monarch"`` alone when the base is unset)."""
    return PREFIX if base is None else f"{PREFIX}_{base}"


def is_monarch_implementation(name: Any) -> bool:
    return isinstance(name, str) and (name == PREFIX or name.startswith(PREFIX + "_"))


def base_implementation(name: str | None) -> str | None:
    """The implementation a ``monarch_<base>`` name stands in for (other names are returned as is)."""
    if name == PREFIX:
        return None
    if is_monarch_implementation(name):
        return name[len(PREFIX) + 1 :]
    return name


@dataclass(frozen=True)
class MonarchSpec:
    """Attached to a converted attention module as ``module._monarch_spec``."""

    block_size: int
    num_steps: int
    pad_type: str
    backend: str
    name: str = ""  # the module's dotted name in the model, for error messages
    exact_diagonal: bool = False
    global_keys: int = 0


def run_spec(
    spec: MonarchSpec,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding: torch.Tensor | None,
    scale: float | None,
) -> torch.Tensor:
    """MonarchAttention of (batch, heads, seq, dim) inputs with ``spec``'s settings."""
    return ops.monarch_attention(
        query,
        key,
        value,
        key_padding,
        block_size=spec.block_size,
        num_steps=spec.num_steps,
        pad_type=spec.pad_type,
        scale=scale,
        backend=spec.backend,
        exact_diagonal=spec.exact_diagonal,
        global_keys=spec.global_keys,
    )


class MonarchMask:
    """What :func:`monarch_mask` returns for a key-padding mask.

    key_padding: (batch, seq) bool, True = real token, or None (no padding).
    base_mask(): the mask the base implementation would have built, computed on first use.
    """

    __slots__ = ("key_padding", "_base", "_kwargs", "_mask", "_built")

    def __init__(self, key_padding: torch.Tensor | None, base: str | None, kwargs: dict[str, Any]):
        self.key_padding = key_padding
        self._base = base
        self._kwargs = kwargs
        self._mask = None
        self._built = False

    def base_mask(self) -> Any:
        if not self._built:
            self._mask = _base_mask(self._base, self._kwargs)
            self._built = True
            self._kwargs = {}  # drop the references to the model's tensors
        return self._mask

    def __repr__(self) -> str:
        shape = None if self.key_padding is None else tuple(self.key_padding.shape)
        return f"MonarchMask(key_padding={shape}, base={self._base!r})"


def _base_mask(base: str | None, kwargs: dict[str, Any]) -> Any:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    # As transformers' _preprocess_mask_arguments: an implementation without a mask function gets None.
    if base not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        return None
    return ALL_MASK_ATTENTION_FUNCTIONS[base](**kwargs)


def _is_key_padding(kwargs: dict[str, Any]) -> bool:
    """Whether the mask transformers asks for (``kwargs`` of a mask function) is at most key
    padding: bidirectional self-attention with no cache, no offsets and a (batch, seq) mask."""
    from transformers.masking_utils import bidirectional_mask_function

    q_offset, kv_offset = kwargs.get("q_offset", 0), kwargs.get("kv_offset", 0)
    attention_mask = kwargs.get("attention_mask")
    return (
        kwargs.get("mask_function") is bidirectional_mask_function
        and kwargs.get("q_length") == kwargs.get("kv_length")
        and isinstance(q_offset, int)
        and isinstance(kv_offset, int)
        and q_offset == 0
        and kv_offset == 0
        and "cache_position" not in kwargs
        and (
            attention_mask is None
            or (
                isinstance(attention_mask, torch.Tensor)
                and attention_mask.dim() == 2
                and attention_mask.shape[-1] == kwargs.get("kv_length")
            )
        )
    )


def monarch_mask(**kwargs: Any) -> Any:
    """Mask function of the ``monarch_<base>`` implementations (see the module docstring)."""
    config = kwargs.get("config")
    base = base_implementation(getattr(config, "_attn_implementation", None))
    if _is_key_padding(kwargs):
        attention_mask = kwargs.get("attention_mask")
        key_padding = None if attention_mask is None else attention_mask.to(torch.bool)
        if key_padding is not None and kwargs.get("allow_is_bidirectional_skip", True) and _no_padding(key_padding):
            key_padding = None
        return MonarchMask(key_padding, base, dict(kwargs))
    return _base_mask(base, kwargs)


def _no_padding(key_padding: torch.Tensor) -> bool:
    """A mask with no padding is the same as no mask, and the kernels without a mask skip a launch
    and the token index (14% of the GPU time measured). Checking costs a device sync once per
    forward, not per layer, as transformers' own SDPA mask does the same check; never under
    ``torch.compile``, where the mask is kept."""
    return not torch.compiler.is_compiling() and bool(key_padding.all())


def _eager_function(module: torch.nn.Module) -> Callable:
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise RuntimeError(
            f"{type(module).__name__} runs on a monarch_* attention implementation but its module "
            f"{type(module).__module__} has no eager_attention_forward to fall back to"
        )
    return fn


def _key_padding(mask: Any, query: torch.Tensor, module_name: str) -> torch.Tensor | None:
    """The (batch, seq) key-padding mask (True = real token) that ``mask`` stands for, or None for
    no mask; an error for a mask that is more than key padding."""
    batch, seq = query.shape[0], query.shape[2]
    if mask is None:
        return None
    if isinstance(mask, MonarchMask):
        return mask.key_padding
    if isinstance(mask, torch.Tensor):
        if mask.dim() == 2 and tuple(mask.shape) == (batch, seq):
            return mask.to(torch.bool)
        if mask.dim() == 4 and mask.shape[-1] == seq and mask.shape[0] in (1, batch):
            allowed = _allowed_positions(mask, module_name)
            # Key padding: every query row of a sequence allows the same keys.
            if bool((allowed == allowed[:, :1, :1, :]).all()):
                return allowed[:, 0, 0, :].expand(batch, seq)
    kind = type(mask).__name__ if not isinstance(mask, torch.Tensor) else f"tensor {tuple(mask.shape)}"
    raise _not_key_padding(module_name, f"a mask ({kind})")


def _allowed_positions(mask: torch.Tensor, module_name: str) -> torch.Tensor:
    """A 4-D boolean or additive mask as booleans (True = attend); an error for an additive mask
    with values other than 0 and "minus infinity" (a bias, which MonarchAttention cannot add)."""
    if mask.dtype == torch.bool:
        return mask
    allowed = mask == 0
    blocked = mask <= torch.finfo(mask.dtype).min / 2
    if not bool((allowed | blocked).all()):
        raise _not_key_padding(module_name, "an additive attention bias")
    return allowed


def _not_key_padding(module_name: str, what: str) -> MonarchConvertError:
    return MonarchConvertError(
        f"converted attention module {module_name} received {what}, not a key-padding mask; "
        "MonarchAttention supports only (batch, seq) padding masks: revert the model to use it"
    )


def _unconverted_mask(attention_mask: Any, device: torch.device) -> Any:
    """The mask a module that was not converted gets: the base implementation's, on its device."""
    if not isinstance(attention_mask, MonarchMask):
        return attention_mask
    mask = attention_mask.base_mask()
    # Where the model's masks are built on another device (accelerate's device_map), the hooks
    # that would have moved the mask with the layer's inputs never saw it.
    if isinstance(mask, torch.Tensor) and mask.device != device:
        mask = mask.to(device)
    return mask


def monarch_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """Attention function of the ``monarch_<base>`` implementations (see the module docstring)."""
    spec: MonarchSpec | None = getattr(module, SPEC_ATTR, None)
    if spec is None:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        attention_mask = _unconverted_mask(attention_mask, query.device)
        base = base_implementation(module.config._attn_implementation)
        function = ALL_ATTENTION_FUNCTIONS.get_interface(base, _eager_function(module))
        return function(module, query, key, value, attention_mask, **kwargs)

    name = spec.name or type(module).__name__
    if key.shape[2] != query.shape[2]:
        raise _not_key_padding(name, f"keys of length {key.shape[2]} for queries of length {query.shape[2]}")
    key_padding = _key_padding(attention_mask, query, name)
    if key_padding is not None and key_padding.device != query.device:
        key_padding = key_padding.to(query.device)
    key, value = _repeat_kv_heads(key, query.shape[1]), _repeat_kv_heads(value, query.shape[1])
    run = module.__dict__.get(PROBE_ATTR, run_spec)
    out = run(spec, query, key, value, key_padding, kwargs.get("scaling"))
    _record_no_weights(module)
    # (batch, heads, seq, dv) -> (batch, seq, heads, dv), as transformers' attention functions return.
    return out.transpose(1, 2).contiguous(), None


def _repeat_kv_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Grouped-query attention (EuroBERT): each key / value head serves ``num_heads / kv_heads``
    consecutive query heads, repeated here as transformers' ``repeat_kv`` does for eager attention."""
    kv_heads = states.shape[1]
    if kv_heads == num_heads:
        return states
    return states.repeat_interleave(num_heads // kv_heads, dim=1)


def _output_collector() -> Any:
    """What transformers' ``capture_outputs`` collects in this forward (a dict of lists, e.g.
    ``{"attentions": [...]}``), or None. Not imported here: a forward that collects has imported it."""
    collector = getattr(sys.modules.get("transformers.utils.output_capturing"), "_active_collector", None)
    return None if collector is None else collector.get()


def _record_no_weights(module: torch.nn.Module) -> None:
    """Give a converted module its entry in ``output_attentions``: ``None``.

    transformers collects attention weights with a forward hook on each attention module, which
    appends the weights the module returns and skips ``None`` (its way of leaving out modules with
    nothing to record). A converted module has no weights, so its layer would vanish from the tuple
    and every later index would name the wrong layer. It appends its ``None`` here, during its own
    forward, so that the entry sits in its layer's place. Only where the base implementation would
    have recorded weights (eager): under ``sdpa`` no module records any, and nor does a converted one.
    """
    collected = _output_collector()
    if collected is None or "attentions" not in collected:
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base_implementation(module.config._attn_implementation) not in ALL_ATTENTION_FUNCTIONS:
        collected["attentions"].append(None)


def ensure_registered(base: str | None) -> str:
    """Register ``monarch_<base>`` with transformers' attention and mask registries; its name."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    name = implementation_name(base)
    if AttentionInterface._global_mapping.get(name) is not monarch_attention_forward:
        AttentionInterface.register(name, monarch_attention_forward)
    if AttentionMaskInterface._global_mapping.get(name) is not monarch_mask:
        AttentionMaskInterface.register(name, monarch_mask)
    return name


# The usual bases are registered on import, so that a converted model (or its pickled config)
# works in any process that imports this module.
for _base in (None, "eager", "sdpa"):
    ensure_registered(_base)
del _base
