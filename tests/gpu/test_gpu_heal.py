"""``monarch_convert.heal`` on a CUDA GPU: heal's own code makes the host wait for the device
nowhere in a step (a wait there stops the host from queuing the next step's kernels while the
device runs this one's), and AdamW runs fused.

Run on the GPU machine: ``pytest -m gpu tests/gpu``.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

WORDS = [f"w{i}" for i in range(200)]
SEQ = 256


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    pytest.importorskip("triton")
    import triton.language as tl

    if "Interpreted" in type(tl.zeros).__name__:
        pytest.skip("TRITON_INTERPRET=1 is set: the GPU tests need compiled kernels")


def _tokenizer_and_texts():
    """A WordPiece tokenizer built in code, and texts of SEQ tokens or more (no padding)."""
    import transformers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)}
    tokenizer = transformers.BertTokenizer(vocab=vocab, do_lower_case=False, model_max_length=SEQ)
    rng = random.Random(0)
    return tokenizer, [" ".join(rng.choices(WORDS, k=SEQ)) for _ in range(9)]


def _waits(step, run, teacher, batch) -> tuple[object, list[str]]:
    """``step(run, teacher, batch)`` with every host wait for the device reported (torch's sync
    debug mode); the files the waits were asked from."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = step(run, teacher, batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out, [w.filename for w in caught if "synchronizing" in str(w.message)]


def test_a_heal_step_waits_for_the_device_only_outside_heal(monkeypatch):
    """Steps after the first two (Triton compiles there): no wait from heal's code; the loss and
    fidelity stay on the device until the end. (The model's own mask checks still wait: an
    all-ones mask is dropped after one read per forward, by transformers' SDPA mask for the
    teacher and ``patches/dispatch.py`` for the student.)"""
    import transformers

    import monarch_convert as mc
    from monarch_convert.healing import loop

    _, control = _waits(lambda *_: float(torch.ones(1, device="cuda")), None, None, None)
    assert control, "the sync debug mode reports nothing here: the test would prove nothing"
    tokenizer, texts = _tokenizer_and_texts()
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=SEQ)
    torch.manual_seed(0)
    model = mc.convert(transformers.BertModel(config).cuda().eval(), block_size=16)
    step, seen, fused = loop._one_step, [], []

    def watched(run, teacher, batch):
        fused.append(run.optimizer.param_groups[0]["fused"])
        if run.step < 2:
            return step(run, teacher, batch)
        out, files = _waits(step, run, teacher, batch)
        seen.extend(files)
        return out

    monkeypatch.setattr(loop, "_one_step", watched)
    report = mc.heal(model, texts[1:], eval_data=texts[:1], processor=tokenizer, steps=5, batch_size=2,
                     seq_len=SEQ, target="hidden", progress=False)
    assert all(fused) and len(fused) == 5
    assert not [f for f in seen if "/healing/" in f or "/evaluation/" in f], seen
    assert len(report.history) == 5 and all(h["loss"] >= 0 for h in report.history)
