"""The test matrix's table: one tiny config per registered ``model_type`` (hidden 32, 4 heads,
2 layers unless said otherwise, built in code), and what its conversion must report.

Adding an architecture to the registry means adding its entry here (tests/test_architectures.py
fails for a registered type without one). The dummy inputs come from the patcher itself
(``patches/inputs.py``), as for ``convert(..., verify=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, pad_token_id=1)
VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64)
SEQ2SEQ = dict(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
               pad_token_id=1, decoder_start_token_id=2)
WAVEFORM = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16),
                conv_stride=(2, 2), conv_kernel=(3, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
                feat_extract_norm="layer", vocab_size=32)
SPECIAL_IDS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
# Both towers of CLIP / SigLIP: the text tower sized like TEXT (32 positions), the vision tower like VISION.
TWO_TOWERS = dict(
    text_config={**TEXT, "max_position_embeddings": 32, **SPECIAL_IDS},
    vision_config=VISION,
)
SEQ2SEQ_SKIPS = {"causal": 2, "cross-attention": 2}


@dataclass(frozen=True)
class Arch:
    """config: transformers config class name and its keyword arguments. model: the model class
    (``AutoModel`` by default). padding: the sides a padded batch is tested on (models that take
    an attention mask; left only where positions follow the padding). output: the output field
    whose real positions the padded-batch test compares. converted_layers / skipped: what the
    conversion report must list (skipped: a word of the reason -> how many modules)."""

    config: str
    kwargs: dict[str, Any]
    model: str = "AutoModel"
    padding: tuple[str, ...] = ()
    output: str = "last_hidden_state"
    converted_layers: tuple[int, ...] = (0, 1)
    skipped: dict[str, int] = field(default_factory=dict)


def _text(config: str, **kwargs: Any) -> Arch:
    return Arch(config, {**TEXT, **kwargs}, padding=("right", "left"))


def _seq2seq(config: str, **kwargs: Any) -> Arch:
    # Learned or sinusoidal positions count from the left edge, padding included: right padding only.
    return Arch(config, {**SEQ2SEQ, **kwargs}, padding=("right",), output="encoder_last_hidden_state",
                skipped=SEQ2SEQ_SKIPS)


ARCHITECTURES: dict[str, Arch] = {
    # text
    "bert": _text("BertConfig"),
    "roberta": _text("RobertaConfig", max_position_embeddings=66),
    "xlm-roberta": _text("XLMRobertaConfig", max_position_embeddings=66),
    "camembert": _text("CamembertConfig", max_position_embeddings=66),
    "electra": _text("ElectraConfig", embedding_size=16),
    "distilbert": _text("DistilBertConfig", dim=32, n_layers=2, n_heads=4, hidden_dim=64),
    # ALBERT: one attention module shared by every layer.
    "albert": Arch("AlbertConfig", {**TEXT, "embedding_size": 16}, padding=("right", "left"), converted_layers=(0,)),
    # ModernBERT: 6 layers, global attention in layers 0 and 3, sliding windows of 8 tokens in the others.
    "modernbert": Arch("ModernBertConfig", {**TEXT, **SPECIAL_IDS, "num_hidden_layers": 6, "local_attention": 8,
                                            "global_attn_every_n_layers": 3, "cls_token_id": 0, "sep_token_id": 2},
                       padding=("right", "left"), converted_layers=(0, 3), skipped={"sliding-window": 4}),
    "nomic_bert": _text("NomicBertConfig"),
    "eurobert": _text("EuroBertConfig", num_key_value_heads=2, **SPECIAL_IDS),  # grouped-query attention
    # vision
    "vit": Arch("ViTConfig", VISION),
    "deit": Arch("DeiTConfig", VISION),
    "dinov2": Arch("Dinov2Config", {**VISION, "mlp_ratio": 2}),
    "dinov3_vit": Arch("DINOv3ViTConfig", {**VISION, "num_register_tokens": 2}),
    "ijepa": Arch("IJepaConfig", VISION),
    "vit_mae": Arch("ViTMAEConfig", {**VISION, "mask_ratio": 0.5, "decoder_hidden_size": 32,
                                     "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 4,
                                     "decoder_intermediate_size": 64},
                    model="ViTMAEForPreTraining", output="logits", skipped={"decoder": 1}),
    "clip": Arch("CLIPConfig", {**TWO_TOWERS, "projection_dim": 16}, output="image_embeds", skipped={"causal": 2}),
    "clip_vision_model": Arch("CLIPVisionConfig", VISION),
    "siglip": Arch("SiglipConfig", TWO_TOWERS, output="image_embeds", skipped={"text tower": 2}),
    "siglip_vision_model": Arch("SiglipVisionConfig", VISION),
    # video and audio
    "videomae": Arch("VideoMAEConfig", {**VISION, "image_size": 16, "num_frames": 4, "tubelet_size": 2}),
    "vivit": Arch("VivitConfig", {**VISION, "image_size": 16, "num_frames": 4, "tubelet_size": [2, 8, 8]}),
    "audio-spectrogram-transformer": Arch("ASTConfig", {**VISION, "patch_size": 16, "num_mel_bins": 32,
                                                        "max_length": 48, "frequency_stride": 8, "time_stride": 8}),
    "wav2vec2": Arch("Wav2Vec2Config", WAVEFORM, padding=("right",)),
    "hubert": Arch("HubertConfig", WAVEFORM, padding=("right",)),
    "whisper": Arch("WhisperConfig", {**SEQ2SEQ, **SPECIAL_IDS, "num_mel_bins": 16, "max_source_positions": 16,
                                      "max_target_positions": 16},
                    output="encoder_last_hidden_state", skipped=SEQ2SEQ_SKIPS),
    # sequence-to-sequence
    "bart": _seq2seq("BartConfig"),
    "mbart": _seq2seq("MBartConfig"),
    "marian": _seq2seq("MarianConfig"),
    "pegasus": _seq2seq("PegasusConfig"),
}


def build_model(model_type: str, seed: int = 0, **overrides: Any) -> Any:
    """The tiny model of ``model_type`` (config fields ``overrides`` changed), in eval mode, with
    transformers' initialisation widened (``initializer_range`` / ``init_std`` 0.2) so that
    attention is far from uniform."""
    import torch
    import transformers as T

    arch = ARCHITECTURES[model_type]
    config = getattr(T, arch.config)(**{**arch.kwargs, **overrides})
    for sub in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        for name in ("initializer_range", "init_std"):
            if sub is not None and hasattr(sub, name):
                setattr(sub, name, 0.2)
    torch.manual_seed(seed)
    cls = getattr(T, arch.model)
    return (cls.from_config(config) if hasattr(cls, "from_config") else cls(config)).eval()
