"""The patcher registry, the registered monarch_* attention / mask functions, and the FLOPs formula."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ARCHS, tiny_model

from monarch_convert.config import auto_block_size
from monarch_convert.flops import (
    monarch_attention_macs,
    softmax_attention_flops,
    softmax_attention_macs,
)
from monarch_convert.patches import dispatch
from monarch_convert.patches.base import layer_index
from monarch_convert.patches.registry import PATCHES, get_patch, supported_model_types


def test_registry_is_keyed_by_model_type():
    # Every type's classes and tiny model: tests/test_architectures.py.
    assert {"bart", "bert", "roberta", "vit"} <= set(supported_model_types())
    assert get_patch("gpt2") is None and get_patch(None) is None
    for model_type, patch in PATCHES.items():
        assert patch.model_type == model_type


def test_presets_are_valid_configs():
    from monarch_convert.config import MonarchConfig, load_preset

    for model_type in ARCHS:
        MonarchConfig.from_dict(load_preset(model_type))
    assert load_preset("vit") == {"block_size": 14, "pad_type": "pre"}
    assert load_preset("roberta")["layers"] == [0, 1, 2, 3, 8, 9, 10, 11]
    assert load_preset("bart") == {"pad_type": "pre"}
    assert load_preset("nonexistent") == {}


def test_max_length_and_auto_block_size():
    import transformers as T

    vit = T.ViTConfig()  # 224 px, patch 16
    assert get_patch("vit").max_length(vit) == 197 and auto_block_size(197) == 15
    assert get_patch("bert").max_length(T.BertConfig()) == 512 and auto_block_size(512) == 23
    assert get_patch("roberta").max_length(T.RobertaConfig(max_position_embeddings=514)) == 512
    assert get_patch("bart").max_length(T.BartConfig()) == 1024 and auto_block_size(1024) == 32
    assert [auto_block_size(n) for n in (1, 2, 4, 5, 16, 17)] == [1, 2, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        auto_block_size(0)


def test_layer_index():
    assert layer_index("bert.encoder.layer.11.attention.self") == 11
    assert layer_index("model.decoder.layers.3.encoder_attn") == 3
    assert layer_index("attention") is None


def test_implementation_names():
    assert dispatch.implementation_name("sdpa") == "monarch_sdpa"
    assert dispatch.implementation_name(None) == "monarch"
    assert dispatch.base_implementation("monarch_flash_attention_2") == "flash_attention_2"
    assert dispatch.base_implementation("monarch") is None
    assert dispatch.base_implementation("sdpa") == "sdpa"
    assert not dispatch.is_monarch_implementation("sdpa")
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = dispatch.ensure_registered("flex_attention")
    assert ALL_ATTENTION_FUNCTIONS[name] is dispatch.monarch_attention_forward
    assert ALL_MASK_ATTENTION_FUNCTIONS[name] is dispatch.monarch_mask


def _mask_kwargs(config, **kw):
    from transformers.masking_utils import bidirectional_mask_function

    base = dict(batch_size=2, q_length=6, kv_length=6, q_offset=0, kv_offset=0,
                mask_function=bidirectional_mask_function, attention_mask=None, allow_is_causal_skip=False,
                allow_is_bidirectional_skip=True, dtype=torch.float32, config=config, use_vmap=False,
                device=torch.device("cpu"))
    return {**base, **kw}


@pytest.mark.parametrize("base", ["sdpa", "eager"])
def test_monarch_mask_matches_base_mask(base):
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, causal_mask_function

    config = tiny_model("bert").config
    config._attn_implementation_internal = dispatch.ensure_registered(base)
    padding = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    base_fn = ALL_MASK_ATTENTION_FUNCTIONS[base]

    # Key padding: a MonarchMask with the (B, N) mask, and the base mask on demand.
    kw = _mask_kwargs(config, attention_mask=padding)
    got = dispatch.monarch_mask(**kw)
    assert isinstance(got, dispatch.MonarchMask) and torch.equal(got.key_padding, padding)
    assert torch.equal(got.base_mask(), base_fn(**kw))
    assert dispatch.monarch_mask(**_mask_kwargs(config)).key_padding is None

    # Causal or cross-attention masks: exactly the base implementation's mask.
    extras = (dict(mask_function=causal_mask_function, allow_is_causal_skip=False),
              dict(kv_length=9, attention_mask=None))
    for extra in extras:
        kw = _mask_kwargs(config, **extra)
        got, want = dispatch.monarch_mask(**kw), base_fn(**kw)
        assert not isinstance(got, dispatch.MonarchMask)
        assert (got is None and want is None) or torch.equal(got, want)


def test_key_padding_from_tensors():
    q = torch.zeros(2, 4, 5, 8)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(dispatch._key_padding(pad.long(), q, "m"), pad)
    four = pad[:, None, None, :].expand(2, 1, 5, 5)
    assert torch.equal(dispatch._key_padding(four, q, "m"), pad)
    additive = torch.zeros(2, 1, 5, 5).masked_fill(~four, torch.finfo(torch.float32).min)
    assert torch.equal(dispatch._key_padding(additive, q, "m"), pad)
    from monarch_convert.errors import MonarchConvertError

    with pytest.raises(MonarchConvertError, match="bias"):
        dispatch._key_padding(torch.randn(2, 1, 5, 5), q, "m")
    with pytest.raises(MonarchConvertError, match="not a key-padding mask"):
        dispatch._key_padding(torch.ones(5, 5).tril().bool()[None, None].expand(2, 1, 5, 5), q, "m")


def test_innermost_attention_modules_only():
    from monarch_convert.conversion_plan import _attention_modules

    names = [n for n, _ in _attention_modules(tiny_model("bert"), get_patch("bert"))]
    assert names == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    names = [n for n, _ in _attention_modules(tiny_model("bart"), get_patch("bart"))]
    assert len(names) == 6 and names[0] == "encoder.layers.0.self_attn"


def test_unconverted_module_without_eager_function_fails_clearly():
    class Orphan(torch.nn.Module):
        pass

    Orphan.__module__ = "not_a_module"
    with pytest.raises(RuntimeError, match="eager_attention_forward"):
        dispatch._eager_function(Orphan())


def test_flops_formula():
    # b = m = sqrt(N), T = 1: 5 N^1.5 d, i.e. 15.6% of softmax at N = 256 and 2.0% at N = 16384.
    for n, pct in ((256, 15.6), (16384, 2.0)):
        b = math.isqrt(n)
        assert monarch_attention_macs(n, 64, b) == 5 * n * b * 64
        assert round(100 * monarch_attention_macs(n, 64, b) / softmax_attention_macs(n, 64), 1) == pct
    # Padding up to N' = m b, and (2T+1) N' b d + 2T N' m d.
    assert monarch_attention_macs(10, 2, 4, num_steps=2, num_heads=3) == 3 * (5 * 12 * 4 * 2 + 4 * 12 * 3 * 2)
    assert softmax_attention_flops(10, 2, 3) == 2 * 2 * 100 * 2 * 3
    with pytest.raises(ValueError, match="block_size"):
        monarch_attention_macs(10, 2, 0)
