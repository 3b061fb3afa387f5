"""scripts/benchmarks/bench_models.py on tiny shapes on the CPU (``--smoke``): every model builds,
runs on SDPA, with attention made free and converted, and writes its CSV rows; a model type the
registry lacks is measured without its converted variant."""

from __future__ import annotations

import csv

import pytest
import torch
from bench_scripts import imported

pytest.importorskip("triton")  # bench_utils imports the launcher's knobs


@pytest.fixture(scope="module")
def bench_models():
    yield from imported("bench_models")


def rows_of(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_run_writes_every_variant_of_every_model(bench_models, tmp_path, capsys):
    bench_models.main(["--smoke", "--csv", str(tmp_path / "rows.csv")])
    rows = rows_of(tmp_path / "rows.csv")
    by_model = {}
    for row in rows:
        by_model.setdefault(row["kernel"], {})[row["provider"]] = row
    assert set(by_model) == {f"model:{name}" for name in bench_models.SHAPES}
    for model, providers in by_model.items():
        assert set(providers) == {"sdpa", "attention-free", "monarch-torch"}, model
        assert providers["sdpa"]["speedup_vs_best_sdpa"] == "1.000" and float(providers["sdpa"]["median_ms"]) > 0
    # ModernBERT with a global layer every 2: 1 of its 2 layers converted, the sliding-window one left.
    assert by_model["model:modernbert-base"]["monarch-torch"]["note"] == "1 of 2 attention modules converted"
    assert "whisper-large B=1 N=64 eager: sdpa" in capsys.readouterr().out


def test_free_attention_changes_the_outputs(bench_models):
    bench_models.register_free()
    _, model, inputs = bench_models.build("bert-base", 64, 1, smoke=True)
    with torch.no_grad():
        sdpa = model(**inputs).last_hidden_state
        bench_models.set_implementation(model, bench_models.FREE)
        free = model(**inputs).last_hidden_state
    assert not torch.allclose(sdpa, free, atol=1e-3)


def _forward_matmuls(model, inputs) -> int:
    """Matrix products in the forward graph that AOT autograd compiles for ``model`` (after its dead
    code is dropped, as Inductor's is)."""
    from torch._functorch.aot_autograd import aot_module_simplified

    graphs = []

    def backend(gm, example):
        return aot_module_simplified(gm, example, fw_compiler=lambda g, _: graphs.append(g) or g)

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=backend)(**inputs)
    torch._dynamo.reset()
    return sum("mm" in str(node.target) for g in graphs for node in g.graph.nodes)


def test_compiled_free_attention_keeps_every_projection(bench_models):
    # A compiled free attention that returned a view of v let the compiler drop the q and k
    # projections (nothing read them): a bound that skipped 2 of 4 projections a layer.
    bench_models.register_free()
    _, model, inputs = bench_models.build("bert-base", 64, 1, smoke=True)
    sdpa = _forward_matmuls(model, inputs)
    bench_models.set_implementation(model, bench_models.FREE)
    assert _forward_matmuls(model, inputs) == sdpa == 13  # 2 layers of 6, and the pooler


def test_free_attention_with_grad_trains_every_projection(bench_models):
    bench_models.register_free()
    _, model, inputs = bench_models.build("bert-base", 64, 1, smoke=True)
    bench_models.set_implementation(model, bench_models.FREE)
    model.train()
    model(**inputs).last_hidden_state.float().square().mean().backward()
    attention = model.encoder.layer[0].attention.self
    for projection in (attention.query, attention.key, attention.value):
        assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def test_type_missing_from_the_registry_is_measured_without_conversion(bench_models, tmp_path, capsys, monkeypatch):
    from monarch_convert.patches import registry

    monkeypatch.delitem(registry.PATCHES, "whisper")
    bench_models.main(["--smoke", "--models", "whisper-large", "--csv", str(tmp_path / "rows.csv")])
    assert [row["provider"] for row in rows_of(tmp_path / "rows.csv")] == ["sdpa", "attention-free"]
    assert "monarch skipped: model_type 'whisper' is not in monarch_convert's registry" in capsys.readouterr().out


def test_profile_cases_profiles_a_converted_model_forward(bench_models, capsys):
    # profile_cases.py's ``model:NAME:SEQ`` builds its model with bench_models (on the path here).
    for profile_cases in imported("profile_cases"):
        profile_cases.profile_model("bert-base", 64, smoke=True)
    table = capsys.readouterr().out
    assert "Self CPU" in table and "aten::linear" in table


def test_cpu_mode_times_eager_wall_only(bench_models):
    """``--cpu`` (full shapes on the CPU): eager wall time of ``--reps`` forwards, no GPU kinds;
    checked here on the smoke shapes."""
    _, model, inputs = bench_models.build("bert-base", 64, 1, smoke=True)
    times = bench_models.timings(model, inputs, "wall", smoke=False, cpu=True, reps=2)
    assert set(times) == {""} and times[""] > 0
    with pytest.raises(SystemExit):
        bench_models.main(["--cpu", "--smoke"])  # one or the other
