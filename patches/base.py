"""What a patcher is: :class:`ArchitecturePatch`, and the helpers the patchers share.

A patcher is data, not code: an :class:`ArchitecturePatch` says which module classes call
transformers' attention interface, which of them are cross-attention, how long the model's
sequences can be, and (optionally) which configs add an attention bias. The helpers below fill
its two functions for the usual cases, so that a patcher stays a few lines of data (see
``registry.py`` for how to add one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from . import inputs
from .inputs import InputBuilder


def _no_bias(config: Any) -> str | None:
    return None


@dataclass(frozen=True)
class ArchitecturePatch:
    """What the converter needs to know about one architecture.

    model_type: ``config.model_type`` this applies to.
    attention_classes: names of the module classes whose ``forward`` calls the attention interface
        (the module passed as its first argument). Names that a given transformers version lacks
        are ignored; when a listed class wraps another listed class, only the innermost counts.
    cross_attention: attribute names (components of a module's dotted name) under which a module
        is cross-attention (queries from one sequence, keys from another): never converted.
    max_length: the longest sequence the model takes, from its config (sets ``block_size="auto"``
        and the default sequence length of the FLOPs report).
    attention_bias: from the config, why its self-attention would need more than a key-padding
        mask (relative-position bias and the like), or ``None``; such modules are not converted.
    left_on_softmax: ``(component, reason)`` pairs: modules under that attribute name are not
        converted, for that reason (CLIP's causal text tower, whose modules do not say they are causal).
    dummy_inputs: builds a small input of the model's modality from its config (``inputs.py``), for
        ``convert(..., verify=True)`` and the test matrix.

    Modules are also left on softmax, whatever the patcher says, when they say they are causal
    (``module.is_causal``) or attend within a sliding window (``module.sliding_window`` set:
    ModernBERT's local layers).
    output_projection: where the Linear that projects the attention's output (the heads side by
        side are its input) sits: dotted paths from the attention module, each leading ``../`` one
        module up (BERT: ``"../output.dense"``), the first that names a Linear counts (layouts of
        several transformers versions); calibration folds its correction into it.
    """

    model_type: str
    attention_classes: tuple[str, ...]
    max_length: Callable[[Any], int]
    cross_attention: tuple[str, ...] = ()
    attention_bias: Callable[[Any], str | None] = _no_bias
    left_on_softmax: tuple[tuple[str, str], ...] = ()
    dummy_inputs: InputBuilder = inputs.text
    output_projection: tuple[str, ...] = ("out_proj",)

    def classify(self, name: str, module: Any, config: Any) -> str | None:
        """Why the attention module called ``name`` cannot be converted, or ``None`` if it can."""
        components = set(name.split("."))
        if components & set(self.cross_attention):
            return "cross-attention (keys come from another sequence)"
        for component, reason in self.left_on_softmax:
            if component in components:
                return reason
        if getattr(module, "is_causal", False):
            return "causal self-attention (needs a causal mask, not a key-padding mask)"
        if getattr(module, "sliding_window", None):
            return f"sliding-window attention (window {module.sliding_window}: a band mask, not a key-padding mask)"
        return self.attention_bias(config) or None


    def output_projection_names(self, module_name: str) -> list[str]:
        """The dotted names where the output projection of the attention module ``module_name``
        may be, in order."""
        names = []
        for path in self.output_projection:
            parts = module_name.split(".")
            while path.startswith("../"):
                parts, path = parts[:-1], path[3:]
            names.append(".".join([*parts, path]))
        return names


def layer_index(name: str) -> int | None:
    """The layer a module sits in: the last integer component of its dotted name."""
    numbers = [int(p) for p in name.split(".") if p.isdigit()]
    return numbers[-1] if numbers else None


# ----------------------------------------------------------------------------------------------
# Helpers for the patchers' fields


def text_max_length(position_offset: int = 0) -> Callable[[Any], int]:
    """Text models: ``max_position_embeddings`` minus the positions the embedding reserves."""

    def max_length(config: Any) -> int:
        return int(config.max_position_embeddings) - position_offset

    return max_length


def roberta_max_length(config: Any) -> int:
    """RoBERTa-style positions start after ``pad_token_id``: 514 position embeddings hold 512 tokens."""
    return int(config.max_position_embeddings) - int(config.pad_token_id or 0) - 1


def num_patches(config: Any) -> int:
    """``(image_size / patch_size) ** 2`` (of ``config.vision_config`` where there is one)."""
    config = getattr(config, "vision_config", None) or config
    size, patch = inputs.pair(config.image_size), inputs.pair(config.patch_size)
    return math.prod(s // p for s, p in zip(size, patch))


def vision_max_length(extra_tokens: int | Callable[[Any], int] = 1) -> Callable[[Any], int]:
    """Vision transformers: the patches plus the class (and register, distillation) tokens
    (ViT-B/16 at 224 px: 197). ``extra_tokens`` may be a function of the config."""

    def max_length(config: Any) -> int:
        extra = extra_tokens(config) if callable(extra_tokens) else extra_tokens
        return num_patches(config) + extra

    return max_length


def video_max_length(extra_tokens: int = 0) -> Callable[[Any], int]:
    """Video transformers: one token per tubelet (``tubelet_size`` frames by one patch) plus the class token(s)."""

    def max_length(config: Any) -> int:
        tubelet = config.tubelet_size
        frames = tubelet[0] if isinstance(tubelet, (list, tuple)) else tubelet
        if isinstance(tubelet, (list, tuple)):  # ViViT: (frames, height, width)
            patches = math.prod(s // p for s, p in zip(inputs.pair(config.image_size), tubelet[1:]))
        else:
            patches = num_patches(config)
        return config.num_frames // frames * patches + extra_tokens

    return max_length


def waveform_max_length(seconds: float = 30.0, sampling_rate: int = 16000) -> Callable[[Any], int]:
    """Raw-audio encoders (wav2vec2, HuBERT) have no fixed length: the frames of ``seconds`` of audio
    (30 s, Whisper's window: 1499 frames with wav2vec2's feature encoder)."""

    def max_length(config: Any) -> int:
        length = int(seconds * sampling_rate)
        for kernel, stride in zip(config.conv_kernel, config.conv_stride):
            length = (length - kernel) // stride + 1
        return length

    return max_length


def absolute_positions_only(config: Any) -> str | None:
    """``attention_bias`` for BERT-style configs: ``position_embedding_type`` other than
    ``"absolute"`` adds a relative-position bias to the scores (transformers < 5 offered it;
    5.x removed it)."""
    kind = getattr(config, "position_embedding_type", "absolute") or "absolute"
    if kind != "absolute":
        return f"position_embedding_type={kind!r} adds a relative-position bias to the scores"
    return None
