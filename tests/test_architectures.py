"""The proof matrix: every registered ``model_type`` (tiny config, float32, CPU) converts exactly
where MonarchAttention is exact, honours padding, reverts bit-identically, survives a save and
load, and reports the modules it really has. The tiny models and their inputs come from
``tests/architectures.py``; each model is built once and shared (every test reverts what it converts).
"""

from __future__ import annotations

import importlib
import inspect
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from architectures import ARCHITECTURES, build_model

import monarch_convert as mc
from monarch_convert.errors import MonarchConvertError
from monarch_convert.patches import dispatch
from monarch_convert.patches.inputs import padding_mask
from monarch_convert.patches.registry import ADDING_ONE, get_patch, supported_model_types

TYPES = supported_model_types()
PADDED = [(t, side) for t in TYPES if t in ARCHITECTURES for side in ARCHITECTURES[t].padding]
EXACT = dict(rtol=1e-4, atol=1e-5)


@lru_cache(maxsize=None)
def _model(model_type: str):
    return build_model(model_type)


@lru_cache(maxsize=None)
def _inputs(model_type: str) -> dict:
    """Two unpadded rows of 12 positions (text, audio frames), or two images / clips / spectrograms."""
    return get_patch(model_type).dummy_inputs(_model(model_type).config, (12, 12))


@lru_cache(maxsize=None)
def _original_outputs(model_type: str) -> list[torch.Tensor]:
    return _run(_model(model_type), _inputs(model_type))


def _tensors(value) -> list[torch.Tensor]:
    """Every floating tensor of a model output, nested outputs and tuples included, in order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _run(model, inputs: dict) -> list[torch.Tensor]:
    with torch.no_grad():
        return _tensors(model(**inputs))


@contextmanager
def _converted(model, **settings):
    mc.convert(model, **settings)
    try:
        yield model
    finally:
        mc.revert(model)


def test_every_registered_type_has_a_table_entry_and_its_classes_exist():
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    assert set(TYPES) == set(ARCHITECTURES)
    for model_type in TYPES:
        name = model_type_to_module_name(model_type)
        module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
        assert any(hasattr(module, c) for c in get_patch(model_type).attention_classes), model_type
        assert hasattr(module, "eager_attention_forward"), model_type


# N for block_size="auto" of published shapes (the config values of the checkpoints named).
PUBLISHED_LENGTHS = [
    ("xlm-roberta", dict(max_position_embeddings=8194, pad_token_id=1), 8192),  # BAAI/bge-m3
    ("modernbert", dict(max_position_embeddings=8192), 8192),  # answerdotai/ModernBERT-base
    ("eurobert", dict(max_position_embeddings=8192), 8192),
    ("nomic_bert", dict(max_position_embeddings=2048), 2048),
    ("deit", dict(image_size=224, patch_size=16), 198),
    ("dinov2", dict(image_size=518, patch_size=14), 1370),
    ("dinov3_vit", dict(image_size=224, patch_size=16, num_register_tokens=4), 201),
    ("ijepa", dict(image_size=224, patch_size=14), 256),
    ("vit_mae", dict(image_size=224, patch_size=16, mask_ratio=0.75), 50),
    ("clip_vision_model", dict(image_size=224, patch_size=32), 50),
    ("siglip_vision_model", dict(image_size=224, patch_size=16), 196),
    ("videomae", dict(image_size=224, patch_size=16, num_frames=16, tubelet_size=2), 1568),
    ("vivit", dict(image_size=224, num_frames=32, tubelet_size=[2, 16, 16]), 3137),
    ("audio-spectrogram-transformer", dict(num_mel_bins=128, max_length=1024), 1214),
    ("wav2vec2", {}, 1499),
    ("whisper", dict(max_source_positions=1500), 1500),
    ("marian", dict(max_position_embeddings=512), 512),
]


@pytest.mark.parametrize("model_type,fields,length", PUBLISHED_LENGTHS)
def test_max_length_of_published_shapes(model_type, fields, length):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    assert get_patch(model_type).max_length(CONFIG_MAPPING[model_type](**fields)) == length


@pytest.mark.parametrize("model_type", TYPES)
def test_block_size_1_and_n_are_the_original_and_revert_is_bit_identical(model_type):
    model, inputs, original = _model(model_type), _inputs(model_type), _original_outputs(model_type)
    for block_size in (1, 4096):  # b = 1 and b >= N: exact softmax attention
        with _converted(model, block_size=block_size):
            outputs = _run(model, inputs)
        assert len(outputs) == len(original)
        for got, want in zip(outputs, original):
            torch.testing.assert_close(got, want, **EXACT)
    assert all(torch.equal(a, b) for a, b in zip(_run(model, inputs), original))


@pytest.mark.parametrize("model_type", TYPES)
def test_small_blocks_change_the_outputs_and_the_report_lists_what_the_model_has(model_type):
    model, arch = _model(model_type), ARCHITECTURES[model_type]
    with _converted(model, block_size=4):
        outputs = _run(model, _inputs(model_type))
        records = mc.conversion_report(model).modules
    # Approximate (so the converted modules really run MonarchAttention), and finite.
    assert any(not torch.allclose(a, b, **EXACT) for a, b in zip(outputs, _original_outputs(model_type)))
    assert all(torch.isfinite(t).all() for t in outputs)
    assert tuple(r.layer for r in records if r.status == "converted") == arch.converted_layers
    skipped = [r.reason for r in records if r.status == "skipped"]
    counts = {word: sum(word in reason for reason in skipped) for word in arch.skipped}
    assert counts == arch.skipped and len(skipped) == sum(arch.skipped.values()), skipped


@pytest.mark.parametrize("model_type", TYPES)
def test_output_projection_of_each_converted_module_is_a_linear_over_its_heads(model_type):
    from monarch_convert.calibration.folding import output_projection

    model = _model(model_type)
    with _converted(model):
        records = [r for r in mc.conversion_report(model).modules if r.status == "converted"]
        for record in records:
            linear = output_projection(model, get_patch(model_type), record.name)
            assert linear.in_features == record.num_heads * record.head_dim, record.name


@pytest.mark.parametrize("model_type", TYPES)
def test_a_folded_correction_is_the_correction_applied_to_each_heads_output(model_type):
    from calibrations import explicit, random_calibration

    from monarch_convert.calibration import passes

    model = _model(model_type)
    with _converted(model, block_size=4):
        calibration = random_calibration(model)
        modules = {r.name: model.get_submodule(r.name) for r in mc.conversion_report(model).converted}
        with passes.probes(modules, explicit(calibration)):
            wanted = _run(model, _inputs(model_type))
        mc.apply_calibration(model, calibration)
        folded = _run(model, _inputs(model_type))
    assert any(not torch.allclose(a, b, **EXACT) for a, b in zip(folded, _original_outputs(model_type)))
    for a, b in zip(folded, wanted):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(_run(model, _inputs(model_type)), _original_outputs(model_type)))


def _row_alone(inputs: dict, mask: torch.Tensor, i: int) -> dict:
    """Row ``i`` of a padded batch without its padding (tensors as long as the mask are cut to it)."""
    real = mask[i].bool()
    return {k: v[i : i + 1, real] if v.dim() > 1 and v.shape[1] == mask.shape[1] else v[i : i + 1]
            for k, v in inputs.items()}


def _with_positions(model, inputs: dict) -> dict:
    """Positions that follow the padding (0 at each row's first real token), where the model takes them."""
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return inputs
    return {**inputs, "position_ids": (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)}


@pytest.mark.parametrize("model_type,side", PADDED)
def test_each_sequence_of_a_padded_batch_gives_what_it_gives_alone(model_type, side):
    model, arch = _model(model_type), ARCHITECTURES[model_type]
    lengths = (12, 7)
    batch = get_patch(model_type).dummy_inputs(model.config, lengths, side, seed=3)
    mask = batch["attention_mask"]
    with _converted(model, block_size=4, num_steps=2), torch.no_grad():
        padded = getattr(model(**_with_positions(model, batch)), arch.output)
        real = padding_mask(lengths, side).bool()  # the real positions at the attention
        for i in range(len(lengths)):
            alone = getattr(model(**_with_positions(model, _row_alone(batch, mask, i))), arch.output)
            torch.testing.assert_close(padded[i, real[i]], alone[0], **EXACT)


@pytest.mark.parametrize("model_type", TYPES)
def test_save_and_from_pretrained_give_the_same_outputs(model_type, tmp_path):
    model, inputs = _model(model_type), _inputs(model_type)
    with _converted(model, block_size=4):
        converted = _run(model, inputs)
        model.save_pretrained(tmp_path)
    loaded = mc.from_pretrained(str(tmp_path)).eval()
    assert mc.is_converted(loaded) and type(loaded) is type(model)
    assert all(torch.equal(a, b) for a, b in zip(_run(loaded, inputs), converted))


@pytest.mark.parametrize("model_type", TYPES)
def test_verify_passes(model_type):
    model = _model(model_type)
    with _converted(model, block_size=4, verify=True):
        assert mc.is_converted(model)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_verify_passes_in_half_precision(dtype):
    model = build_model("bert").to(dtype)
    mc.convert(model, verify=True)
    assert mc.is_converted(model)


def test_verify_runs_the_base_model_whatever_the_head_expects():
    import transformers as T

    model = T.BertForMultipleChoice(_model("bert").config).eval()  # input_ids (batch, choices, seq)
    mc.convert(model, verify=True)
    assert mc.is_converted(model)


def test_verify_names_the_first_module_that_differs(monkeypatch):
    model = _model("bert")
    exact = dispatch.ops.monarch_attention
    monkeypatch.setattr(dispatch.ops, "monarch_attention", lambda *a, **k: exact(*a, **k) * 1.01)
    with pytest.raises(MonarchConvertError, match=r"module encoder\.layer\.0\.attention\.self differs"):
        mc.convert(model, verify=True)
    assert not mc.is_converted(model) and model.config._attn_implementation == "sdpa"


def test_unsupported_type_is_one_line_with_the_list_and_where_to_read_how_to_add_one():
    import transformers as T

    model = T.GPT2Model(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(MonarchConvertError) as info:
        mc.convert(model)
    message = str(info.value)
    assert "\n" not in message and "unsupported model type 'gpt2'" in message
    assert ", ".join(TYPES) in message and ADDING_ONE in message
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "\n## Adding an architecture\n" in readme


def test_verify_names_a_sliding_window_layer_a_wrong_patcher_would_convert():
    # A patcher that missed ModernBERT's sliding windows: layer 1 receives a band mask, not key padding.
    model = build_model("modernbert")
    model.layers[1].attn.sliding_window = None
    with pytest.raises(MonarchConvertError, match=r"verification failed: .*layers\.1\.attn"):
        mc.convert(model, verify=True)
    assert not mc.is_converted(model)


def _cli(argv, capsys) -> tuple[int, str, str]:
    from monarch_convert import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_verifies_by_default_and_no_verify_skips_it(tmp_path, capsys):
    _model("eurobert").save_pretrained(tmp_path / "src")
    code, out, _ = _cli([tmp_path / "src", "--out", tmp_path / "a"], capsys)
    assert code == 0 and "Verified in" in out
    code, out, _ = _cli([tmp_path / "src", "--out", tmp_path / "b", "--no-verify"], capsys)
    assert code == 0 and "Verified" not in out


def test_cli_refuses_an_unsupported_type_in_one_line(tmp_path, capsys):
    import transformers as T

    T.GPT2Model(T.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)).save_pretrained(tmp_path)
    code, _, err = _cli([tmp_path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unsupported model type 'gpt2'" in err and ADDING_ONE in err
