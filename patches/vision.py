"""Vision transformers beyond ViT, each a few lines of data. Every layer's self-attention is
non-causal and unmasked; the maximum length is the patches at the config's image size plus the
class, distillation and register tokens.

- ``deit`` (class and distillation tokens), ``dinov2``, ``dinov3_vit`` (rotary, applied to queries
  and keys before the attention function; register tokens), ``ijepa`` (no class token).
- ``vit_mae``: the encoder, which sees the patches its random masking keeps
  (``int(patches * (1 - mask_ratio)) + 1`` tokens); the pre-training decoder stays as it was.
- ``clip`` / ``clip_vision_model``, ``siglip`` / ``siglip_vision_model``: the vision tower. CLIP's
  text tower is causal (its modules do not say so: the model passes a causal mask), SigLIP's text
  tower is short (64 tokens) and ``block_size="auto"`` comes from the vision tower's length: both
  stay on softmax. SigLIP's pooling head (``nn.MultiheadAttention`` with a learned probe query) is
  not an attention-interface module and is left as it is.
"""

from typing import Any

from . import inputs
from .base import ArchitecturePatch, num_patches, vision_max_length

_CLIP_TEXT = ("text_model", "causal self-attention (CLIP's text tower runs with a causal mask)")
_SIGLIP_TEXT = ("text_model", "text tower (64 tokens; block_size='auto' is set from the vision tower's length)")


def _vit_mae_length(config: Any) -> int:
    return int(num_patches(config) * (1 - config.mask_ratio)) + 1


# Where ViT-style models keep the attention's output projection, in the layouts of transformers 5.x.
_VIT_OUTPUT = ("o_proj", "../output.dense")


def _vision(model_type: str, classes: tuple[str, ...], extra_tokens: Any = 1, **fields: Any) -> ArchitecturePatch:
    defaults = {"dummy_inputs": inputs.image, "output_projection": _VIT_OUTPUT}
    return ArchitecturePatch(model_type, classes, vision_max_length(extra_tokens), **{**defaults, **fields})


PATCHES = (
    _vision("deit", ("DeiTAttention", "DeiTSelfAttention"), extra_tokens=2),
    _vision("dinov2", ("Dinov2Attention", "Dinov2SelfAttention")),
    _vision("dinov3_vit", ("DINOv3ViTAttention",), extra_tokens=lambda c: 1 + c.num_register_tokens),
    _vision("ijepa", ("IJepaAttention", "IJepaSelfAttention"), extra_tokens=0),
    ArchitecturePatch(
        "vit_mae",
        ("ViTMAEAttention", "ViTMAESelfAttention"),
        _vit_mae_length,
        left_on_softmax=(("decoder", "ViT-MAE's pre-training decoder, left as it was"),),
        dummy_inputs=inputs.masked_image,
        output_projection=_VIT_OUTPUT,
    ),
    _vision("clip_vision_model", ("CLIPAttention",), output_projection=("out_proj",)),
    _vision(
        "clip", ("CLIPAttention",), left_on_softmax=(_CLIP_TEXT,), dummy_inputs=inputs.image_and_text,
        output_projection=("out_proj",),
    ),
    _vision("siglip_vision_model", ("SiglipAttention",), extra_tokens=0, output_projection=("out_proj",)),
    _vision(
        "siglip", ("SiglipAttention",), extra_tokens=0, left_on_softmax=(_SIGLIP_TEXT,),
        dummy_inputs=inputs.image_and_text, output_projection=("out_proj",),
    ),
)
