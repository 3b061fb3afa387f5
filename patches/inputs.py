"""Small dummy inputs for each modality, built from a model's config (no tokenizer, no download).

``convert(model, verify=True)`` runs the model on one of these (``monarch_convert/verification.py``),
and the test matrix (``tests/architectures.py``) on padded batches of them. Each builder is an
:data:`InputBuilder`: ``builder(config, lengths, padding_side, seed)`` gives one row per entry of
``lengths``, each with that many positions at the attention (tokens, or audio frames), padded to
the longest on ``padding_side`` with an ``attention_mask`` where the model takes one. Modalities
of fixed length (images, video, spectrograms) ignore ``lengths`` except for the batch size.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

InputBuilder = Callable[..., dict]


def _sub(config: Any, name: str) -> Any:
    """The ``name`` sub-config (``vision_config`` of CLIP / SigLIP) if the config has one, else the config."""
    return getattr(config, name, None) or config


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def padding_mask(lengths: Sequence[int], padding_side: str = "right") -> torch.Tensor:
    """(batch, max(lengths)) long mask, 1 at each row's real positions."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    n = max(lengths)
    positions = torch.arange(n)[None, :]
    real = torch.tensor(list(lengths))[:, None]
    mask = positions < real if padding_side == "right" else positions >= n - real
    return mask.long()


def text(config: Any, lengths: Sequence[int] = (16,), padding_side: str = "right", seed: int = 0) -> dict:
    """``input_ids`` (random ids, ``pad_token_id`` at the padding) and ``attention_mask``."""
    config = _sub(config, "text_config")
    mask = padding_mask(lengths, padding_side)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    # Ids above the special ones (0-3 in every vocabulary used here), so that no real token is a pad.
    ids = torch.randint(4, config.vocab_size, tuple(mask.shape), generator=_generator(seed))
    return {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}


def seq2seq_text(config: Any, lengths: Sequence[int] = (16,), padding_side: str = "right", seed: int = 0) -> dict:
    """:func:`text` for the encoder, and four ``decoder_input_ids`` per row."""
    inputs = text(config, lengths, padding_side, seed)
    inputs["decoder_input_ids"] = torch.randint(4, config.vocab_size, (len(lengths), 4), generator=_generator(seed + 1))
    return inputs


def pair(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def image(config: Any, lengths: Sequence[int] = (1,), padding_side: str = "right", seed: int = 0) -> dict:
    """``pixel_values`` (batch, channels, height, width) at the config's image size."""
    vision = _sub(config, "vision_config")
    shape = (len(lengths), getattr(vision, "num_channels", 3), *pair(vision.image_size))
    return {"pixel_values": torch.randn(shape, generator=_generator(seed))}


def image_and_text(config: Any, lengths: Sequence[int] = (16,), padding_side: str = "right", seed: int = 0) -> dict:
    """Both towers of CLIP / SigLIP: :func:`image` and :func:`text`."""
    return {**text(config, lengths, padding_side, seed), **image(config, lengths, padding_side, seed)}


def masked_image(config: Any, lengths: Sequence[int] = (1,), padding_side: str = "right", seed: int = 0) -> dict:
    """ViT-MAE: :func:`image` and a fixed ``noise``, so that its random patch masking is the same every run."""
    inputs = image(config, lengths, padding_side, seed)
    patches = math.prod(s // p for s, p in zip(pair(config.image_size), pair(config.patch_size)))
    inputs["noise"] = torch.rand((len(lengths), patches), generator=_generator(seed + 1))
    return inputs


def video(config: Any, lengths: Sequence[int] = (1,), padding_side: str = "right", seed: int = 0) -> dict:
    """``pixel_values`` (batch, frames, channels, height, width)."""
    shape = (len(lengths), config.num_frames, config.num_channels, *pair(config.image_size))
    return {"pixel_values": torch.randn(shape, generator=_generator(seed))}


def spectrogram(config: Any, lengths: Sequence[int] = (1,), padding_side: str = "right", seed: int = 0) -> dict:
    """Audio Spectrogram Transformer: ``input_values`` (batch, max_length frames, mel bins)."""
    shape = (len(lengths), config.max_length, config.num_mel_bins)
    return {"input_values": torch.randn(shape, generator=_generator(seed))}


def speech_features(config: Any, lengths: Sequence[int] = (1,), padding_side: str = "right", seed: int = 0) -> dict:
    """Whisper: ``input_features`` of the one length its encoder takes (two mel frames per position),
    and four ``decoder_input_ids`` per row."""
    g = _generator(seed)
    features = torch.randn((len(lengths), config.num_mel_bins, 2 * config.max_source_positions), generator=g)
    decoder_ids = torch.randint(4, config.vocab_size, (len(lengths), 4), generator=g)
    return {"input_features": features, "decoder_input_ids": decoder_ids}


def waveform_samples(config: Any, frames: int) -> int:
    """The number of audio samples that wav2vec2's convolutional feature encoder turns into ``frames`` frames."""
    stride, receptive_field = 1, 1
    for kernel, step in zip(config.conv_kernel, config.conv_stride):
        receptive_field += (kernel - 1) * stride
        stride *= step
    return receptive_field + (frames - 1) * stride


def waveform(config: Any, lengths: Sequence[int] = (16,), padding_side: str = "right", seed: int = 0) -> dict:
    """wav2vec2 / HuBERT: ``input_values`` (raw audio) with ``lengths`` frames per row, zero padding
    and an ``attention_mask`` over the samples."""
    samples = [waveform_samples(config, n) for n in lengths]
    mask = padding_mask(samples, padding_side)
    values = torch.randn(tuple(mask.shape), generator=_generator(seed)) * mask
    return {"input_values": values, "attention_mask": mask}
