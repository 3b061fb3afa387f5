"""ViT (``google/vit-*``): every encoder layer's self-attention is non-causal and unmasked.

transformers 5.x names the attention-calling module ``ViTAttention`` (5.17 and later);
``ViTSelfAttention`` is listed for versions that split it out (the innermost one counts).
Preset (configs/vit.json): block 14 with ``pre`` padding, so that at 224 px (197 tokens) the class
token sits alone in block 0 and every other block is one row of 14 patches.
"""

from . import inputs
from .base import ArchitecturePatch, vision_max_length

PATCH = ArchitecturePatch(
    model_type="vit",
    attention_classes=("ViTAttention", "ViTSelfAttention"),
    max_length=vision_max_length(extra_tokens=1),
    dummy_inputs=inputs.image,
    output_projection=("o_proj", "../output.dense"),
)
