"""Video and audio encoders, each a few lines of data.

- ``videomae`` (one token per tubelet, no class token) and ``vivit`` (plus a class token): every
  layer, unmasked.
- ``audio-spectrogram-transformer``: every layer, unmasked; the patches of ``max_length`` frames
  plus the class and distillation tokens (1214 for the AudioSet checkpoints).
- ``wav2vec2``, ``hubert``: every layer, with the key-padding mask of the audio frames. They take
  audio of any length: ``block_size="auto"`` is set from 30 s of audio at 16 kHz (1499 frames).
- ``whisper``: the encoder's self-attention (1500 positions, unmasked); the decoder's causal
  self-attention and its cross-attention stay on softmax.
"""

from typing import Any

from . import inputs
from .base import ArchitecturePatch, video_max_length, waveform_max_length

_VIDEO = dict(dummy_inputs=inputs.video, output_projection=("o_proj", "../output.dense"))


def _spectrogram_length(config: Any) -> int:
    frequency = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    time = (config.max_length - config.patch_size) // config.time_stride + 1
    return frequency * time + 2


def _waveform(model_type: str, prefix: str) -> ArchitecturePatch:
    return ArchitecturePatch(
        model_type, (f"{prefix}Attention",), waveform_max_length(), dummy_inputs=inputs.waveform
    )


PATCHES = (
    ArchitecturePatch("videomae", ("VideoMAESelfAttention", "VideoMAEAttention"), video_max_length(), **_VIDEO),
    ArchitecturePatch("vivit", ("VivitAttention", "VivitSelfAttention"), video_max_length(1), **_VIDEO),
    ArchitecturePatch(
        "audio-spectrogram-transformer",
        ("ASTAttention", "ASTSelfAttention"),
        _spectrogram_length,
        dummy_inputs=inputs.spectrogram,
        output_projection=("o_proj", "../output.dense"),
    ),
    _waveform("wav2vec2", "Wav2Vec2"),
    _waveform("hubert", "Hubert"),
    ArchitecturePatch(
        "whisper",
        ("WhisperAttention",),
        lambda config: int(config.max_source_positions),
        cross_attention=("encoder_attn",),
        dummy_inputs=inputs.speech_features,
    ),
)
