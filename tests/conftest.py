"""Shared fixtures: tiny models of each supported architecture, built in code (no download)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

# Triton's CPU interpreter (tests/test_triton_kernels.py) is chosen when triton is first imported,
# which happens early (transformers imports it): pick it here, on machines without CUDA only.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Config class and keyword arguments of each architecture's tiny config.
TINY_CONFIGS = {
    "vit": ("ViTConfig", dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, initializer_range=0.2, num_labels=3)),
    "bert": ("BertConfig", dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64, initializer_range=0.2, num_labels=3)),
    "roberta": ("RobertaConfig", dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=66, initializer_range=0.2,
                                      num_labels=3)),
    "bart": ("BartConfig", dict(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
                                encoder_attention_heads=4,
                                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                max_position_embeddings=64, init_std=0.2, num_labels=3)),
}
ARCHS = tuple(TINY_CONFIGS)


def tiny_config(arch: str, **overrides):
    """A small config of ``arch``: hidden 32, 4 heads, 2-4 layers. Initialisation is wider than
    transformers' default so that attention is far from uniform (Monarch then differs from softmax)."""
    import transformers as T

    if arch not in TINY_CONFIGS:
        raise ValueError(arch)
    config_class, kw = TINY_CONFIGS[arch]
    return getattr(T, config_class)(**{**kw, **overrides})


def tiny_model(arch: str, model_class=None, seed: int = 0, **overrides):
    """``model_class`` (default AutoModel) built from :func:`tiny_config`, in eval mode."""
    import transformers as T

    torch.manual_seed(seed)
    cls = model_class or T.AutoModel
    config = tiny_config(arch, **overrides)
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    return model.eval()


def tiny_inputs(arch: str, batch: int = 2, seq: int = 20, lengths=None, seed: int = 1) -> dict:
    """Inputs for a tiny model: token ids with a right-padded attention mask (``lengths`` real
    tokens per row, default seq and seq - 6), or images for ViT."""
    g = torch.Generator().manual_seed(seed)
    if arch == "vit":
        return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=g)}
    lengths = lengths or [seq] + [max(1, seq - 6 * i) for i in range(1, batch)]
    ids = torch.randint(4, 100, (batch, seq), generator=g)
    mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 1)  # pad id
    out = {"input_ids": ids, "attention_mask": mask}
    if arch == "bart":
        out["decoder_input_ids"] = torch.randint(4, 100, (batch, 7), generator=g)
    return out


def main_output(arch: str, output) -> torch.Tensor:
    """The tensor that shows the converted attention: BART's encoder output, else the last hidden state
    (or logits for heads)."""
    if arch == "bart" and getattr(output, "encoder_last_hidden_state", None) is not None:
        return output.encoder_last_hidden_state
    for name in ("last_hidden_state", "logits", "start_logits"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise AttributeError(type(output).__name__)


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param
