"""Interrupting and killing ``monarch-convert``: Ctrl-C and SIGTERM end in one line with exit 130 /
143, and a kill at any point leaves DIR as it was or complete once the next run has repaired it."""

from __future__ import annotations

import signal
import stat

import pytest
from test_cli_helpers import STOP_ENV, Child, cli_env, listing, one_line_error, run, save_tiny_bert

pytest.importorskip("transformers")

PREVIOUS = {"previous.txt": "the previous checkpoint"}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture
def previous(tmp_path):
    """DIR, holding an earlier checkpoint (one file stands for it), mode 0755."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text(PREVIOUS["previous.txt"])
    out.chmod(0o755)
    return out


def assert_one_error(err: str, expected: str) -> None:
    """``expected`` is the last line of stderr and its only error (other lines: the stop point's,
    progress bars'; ``splitlines`` also splits at their "\r")."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == expected, err
    assert [line for line in lines if "error" in line.lower() or "Traceback" in line] == [expected], err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_conversion_is_one_line_and_leaves_dir(tiny_bert, previous, signum):
    child = Child([tiny_bert, "--out", previous, "--overwrite"], env=cli_env(**{STOP_ENV: "loaded"}))
    child.wait_for("stopped at loaded")  # loaded, its staging folder beside DIR, nothing swapped yet
    assert len(list(previous.parent.iterdir())) == 2
    child.process.send_signal(signum)
    code, _, err = child.finish()
    assert code == 128 + signum  # 130, 143: `monarch-convert ... && next` does not go on
    name = signal.Signals(signum).name
    expected = (f"error: interrupted ({name}) while converting {tiny_bert} into {previous}; "
                f"{previous} was left as it was")
    assert_one_error(err, expected)
    assert listing(previous) == PREVIOUS
    assert [p.name for p in previous.parent.iterdir()] == ["out"]  # the staging folder is gone


def test_interrupted_evaluation_is_one_line(tmp_path):
    model = save_tiny_bert(tmp_path / "model", tokenizer=True, model_class="BertForSequenceClassification")
    data = tmp_path / "data.csv"
    data.write_text("sentence,label\n" + "".join(f"the film number {i} was fine,{i % 2}\n" for i in range(3000)))
    out = tmp_path / "report"
    child = Child(["eval", model, "-t", "text-classification", "-d", data, "--batch-size", "1", "--out", out])
    child.wait_for("original (softmax)")  # evaluating, one batch at a time
    child.process.send_signal(signal.SIGINT)
    code, _, err = child.finish()
    assert code == 130
    assert_one_error(err, f"error: interrupted (SIGINT) while evaluating {model}; {out} was left as it was")
    assert not out.exists()


@pytest.mark.parametrize(
    "point, result",
    [
        ("loaded", "previous"),  # nothing written yet: the staging folder is removed
        ("swap:new", "previous"),  # the new folder complete, DIR not yet moved aside: undone
        ("swap:old", "converted"),  # DIR moved aside, the new folder not yet in place: finished
        ("swap:done", "converted"),  # the new folder in place, the old one not yet removed: removed
    ],
)
def test_a_kill_anywhere_leaves_dir_as_it_was_or_complete(tiny_bert, previous, point, result):
    killed = run([tiny_bert, "--out", previous, "--overwrite"], env=cli_env(**{STOP_ENV: f"{point}:kill"}))
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in previous.parent.iterdir())
    assert len(left) == 2, left  # a staging folder left behind (with DIR, or with the other one)
    assert previous.exists() == (point != "swap:old")  # the one window without DIR: a recoverable pair

    after = run([tiny_bert, "--out", previous])  # the next run into DIR repairs it first, whatever it does next
    assert "--overwrite" in one_line_error(after)  # ...here: DIR is not empty
    note = after.stdout.strip()
    assert note.startswith(f"{previous}: ") and "\n" not in note
    assert ("finished an interrupted swap" in note) == (point == "swap:old")
    assert [p.name for p in previous.parent.iterdir()] == ["out"]
    files = listing(previous)
    assert files == PREVIOUS if result == "previous" else ("conversion.json" in files and "previous.txt" not in files)
    assert stat.S_IMODE(previous.stat().st_mode) == 0o755
