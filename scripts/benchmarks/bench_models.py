#!/usr/bin/env python
"""Whole encoders on SDPA, converted (``monarch_convert.convert``, block_size="auto") and with
attention made free, float16, random weights built in code, an attention mask of ones (what a
tokenizer gives).

    python scripts/benchmarks/bench_models.py [--models bert-base bge-m3 ...] [--seqs 2048 4096] [--batch 1]
                                         [--compile] [--csv FILE] [--cpu | --smoke]

Models (``--models``; shapes as published, vocabularies included):

- ``bert-base``, ``bart-base`` (its encoder): N = ``--seqs`` (default 512 ... 16384).
- ``bge-m3``: XLM-RoBERTa large (24 layers, hidden 1024, 16 heads, intermediate 4096), BGE-M3's
  shape; ``modernbert-base`` (22 layers, hidden 768, 12 heads, a global layer every 3, the others
  128-token sliding windows, which stay on softmax): N = ``--seqs`` (default 2048, 4096, 8192).
- ``whisper-large``: the Whisper-large encoder (32 layers, hidden 1280, 20 heads, 128 mel bins), N = 1500
  (30 s of audio; the encoder takes no other length), no mask.

Per model and N, three variants of the same weights: ``sdpa`` (the original), ``monarch-triton``
(converted; ModernBERT's sliding-window layers stay on SDPA), and ``attention-free``: every
attention module calls a function that does no work (``free_attention``; compiled, an opaque op, so
that the q and k projections still run) registered as an attention implementation, so its time is
what everything but attention costs: the bound no attention kernel can beat. Each is timed eager
(wall time, host launch overhead included), in GPU time (the sum of the forward's kernel times,
torch.profiler: what the GPU is kept busy) and, with ``--compile``, under
``torch.compile(mode="reduce-overhead")`` (CUDA graphs). CSV rows: kernel ``model:<name>``, provider
``sdpa`` / ``monarch-triton`` / ``attention-free`` with ``+gpu`` / ``+compile``,
``speedup_vs_best_sdpa`` = the SDPA time of the same kind over the row's. The eager times of every
model and N are measured first, then the compiled ones, then the GPU times, each kind on models
built again (the same seed): after a torch.profiler session every launch of the process costs more
host time, which until code ea9d9d1 slowed the eager times of every variant measured after SDPA's,
and a compiled run slows later eager calls too (until code fde3ac3 each variant's compiled run came
before the next variant's eager one).

A model whose ``model_type`` is not in monarch_convert's registry is measured on SDPA and free
attention only, with a line saying why. ``--cpu``: the same shapes on the CPU in float32, eager
wall time only (median of ``--reps`` forwards after one), the converted model on the PyTorch path
(rows ``monarch-torch``). ``--smoke``: tiny shapes (2 layers, hidden 64) on the CPU in float32,
eager wall time only, N = 64, to check the script itself (tests/test_bench_models.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from bench_utils import Env, Row, bench, kernel_ms, wall_ms, whole_model_environment, write_csv

FREE = "bench_attention_free"
LONG = (2048, 4096, 8192)
SMOKE = dict(layers=2, hidden=64, heads=4, intermediate=128, vocab=50400)  # vocab: ModernBERT pads with 50283


@dataclass(frozen=True)
class Shape:
    """One benchmarked encoder: its registry ``model_type``, a config for N, the model from a
    config, its inputs, and the lengths it is measured at (None: ``--seqs``)."""

    model_type: str
    config: Callable[[int, bool], Any]  # (N, smoke) -> transformers config
    model: Callable[[Any], Any]
    inputs: Callable[[Any, int, int, str], dict]
    seqs: tuple[int, ...] | None = None


def _sizes(smoke: bool, **full: int) -> dict[str, int]:
    return {k: SMOKE[k] for k in full} if smoke else full


def _text_inputs(config: Any, N: int, batch: int, device: str) -> dict:
    ids = torch.randint(4, config.vocab_size, (batch, N), device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _speech_inputs(config: Any, N: int, batch: int, device: str) -> dict:
    frames = 2 * config.max_source_positions  # the two convolutions halve it to N positions
    return {"input_features": torch.randn(batch, config.num_mel_bins, frames, device=device)}


def _bert(N: int, smoke: bool):
    import transformers as T

    s = _sizes(smoke, layers=12, hidden=768, heads=12, intermediate=3072, vocab=30522)
    return T.BertConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                        num_attention_heads=s["heads"], intermediate_size=s["intermediate"], max_position_embeddings=N)


def _bart(N: int, smoke: bool):
    import transformers as T

    s = _sizes(smoke, layers=6, hidden=768, heads=12, intermediate=3072, vocab=50265)
    return T.BartConfig(vocab_size=s["vocab"], d_model=s["hidden"], encoder_layers=s["layers"], decoder_layers=1,
                        encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"],
                        encoder_ffn_dim=s["intermediate"], decoder_ffn_dim=s["intermediate"], max_position_embeddings=N)


def _xlm_roberta(N: int, smoke: bool):
    import transformers as T

    s = _sizes(smoke, layers=24, hidden=1024, heads=16, intermediate=4096, vocab=250002)
    return T.XLMRobertaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                              num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
                              max_position_embeddings=N + 2, type_vocab_size=1)  # + 2: positions start after pad


def _modernbert(N: int, smoke: bool):
    import transformers as T

    s = _sizes(smoke, layers=22, hidden=768, heads=12, intermediate=1152, vocab=50368)
    return T.ModernBertConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                              num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
                              max_position_embeddings=N, global_attn_every_n_layers=2 if smoke else 3,
                              local_attention=16 if smoke else 128)


def _whisper(N: int, smoke: bool):
    import transformers as T

    s = _sizes(smoke, layers=32, hidden=1280, heads=20, intermediate=5120)
    return T.WhisperConfig(d_model=s["hidden"], encoder_layers=s["layers"], encoder_attention_heads=s["heads"],
                           encoder_ffn_dim=s["intermediate"], decoder_layers=1, decoder_attention_heads=s["heads"],
                           num_mel_bins=16 if smoke else 128, max_source_positions=N)


def _whisper_encoder(config):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(config)


def _auto(config):
    import transformers as T

    return T.AutoModel.from_config(config)


SHAPES = {
    "bert-base": Shape("bert", _bert, _auto, _text_inputs),
    "bart-base": Shape("bart", _bart, lambda c: _auto(c).get_encoder(), _text_inputs),
    "bge-m3": Shape("xlm-roberta", _xlm_roberta, _auto, _text_inputs, LONG),
    "modernbert-base": Shape("modernbert", _modernbert, _auto, _text_inputs, LONG),
    "whisper-large": Shape("whisper", _whisper, _whisper_encoder, _speech_inputs, (1500,)),
}


# ------------------------------------------------------------------------------ attention made free


def free_attention(module, query, key, value, attention_mask, **kwargs):
    """The attention function of the ``attention-free`` variant: no work, but q and k stay inputs
    of what follows, so that their projections still run (their cost is not attention's). Eager
    without grad: the values, in the layout attention functions return (batch, seq, heads,
    head_dim), as a view; with grad, the same through ``_FreeAttention``, whose backward hands q and
    k gradients (a step then runs their projections' backward and optimiser updates too); compiled,
    ``bench_free::attention``, opaque to the compiler. (Until the fifth round of 2026-12-07 in
    docs/benchmarks-log.md it was the view alone: the compiler dropped the q and k projections, whose
    outputs nothing read, 2 of a layer's 4 GEMMs, and a step trained neither.)"""
    if torch.compiler.is_compiling():
        return torch.ops.bench_free.attention(query, key, value), None
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        return _FreeAttention.apply(query, key, value), None
    return value.transpose(1, 2), None


class _FreeAttention(torch.autograd.Function):
    """The values as a view; every input's gradient a view of the output's (D = DV here)."""

    @staticmethod
    def forward(ctx, query, key, value):
        return value.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.transpose(1, 2)
        return grad, grad, grad


def _free_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``bench_free::attention``: an uninitialised output (no kernel), as a compiled graph needs a
    new tensor from an opaque op. Its values are junk: compiled attention-free runs are timed only."""
    B, H, N, DV = value.shape
    return value.new_empty((B, N, H, DV))


def register_free() -> None:
    """``FREE`` as an attention implementation, and its compiled form as a custom op (once); masks
    are built as for SDPA (their cost stays)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    if not hasattr(torch.ops.bench_free, "attention"):
        op = torch.library.custom_op("bench_free::attention", mutates_args=())(_free_attention_op)
        op.register_fake(_free_attention_op)
    AttentionInterface.register(FREE, free_attention)
    AttentionMaskInterface.register(FREE, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def set_implementation(model, name: str) -> None:
    """Every config of ``model``'s modules reads ``name`` as its attention implementation (the
    internal field, as conversion does: the public setter validates against transformers' list)."""
    for config in {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values():
        config._attn_implementation_internal = name


# ------------------------------------------------------------------------------------- timing


def gpu_ms(fwd, reps: int = 5) -> float:
    """Median over ``reps`` forwards of the sum of their kernels' device times. (Not a CUDA graph of
    the whole forward: the SDPA model captured that way took 836 ms at N = 16384 against 30 ms eager
    on an H100, so it does not run the eager path.)"""
    from torch.profiler import ProfilerActivity, profile

    times = []
    for _ in range(reps):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fwd()
            torch.cuda.synchronize()
        times.append(kernel_ms(prof))
    return sorted(times)[len(times) // 2]


def timings(model, inputs: dict, kind: str, smoke: bool, cpu: bool = False, reps: int = 3) -> dict[str, float]:
    """One forward's times of ``kind``: "wall" gives {"": eager wall ms}, "compile" {"+compile":
    wall ms of ``torch.compile(mode="reduce-overhead")``}, "gpu" {"+gpu": GPU ms}."""

    def fwd(m=model):
        with torch.no_grad():
            out = m(**inputs)
        if smoke and not torch.isfinite(out.last_hidden_state).all():
            raise SystemExit(f"non-finite outputs from {type(model).__name__}")
        return out

    fwd()
    if kind == "gpu":
        return {"+gpu": gpu_ms(fwd)}
    if smoke or cpu:
        return {"": wall_ms(fwd, reps)}
    if kind == "wall":
        return {"": bench(fwd, rep=200)}
    torch._dynamo.reset()
    compiled = torch.compile(model, mode="reduce-overhead")
    for _ in range(3):
        fwd(compiled)
    return {"+compile": bench(lambda: fwd(compiled), rep=200)}


# ---------------------------------------------------------------------------------- one model


def build(name: str, N: int, batch: int, smoke: bool, cpu: bool = False) -> tuple[Any, Any, dict]:
    """(config, model on SDPA in eval mode, inputs) of ``name`` at length N, seeded."""
    shape, device = SHAPES[name], "cpu" if smoke or cpu else "cuda"
    dtype = torch.float32 if smoke or cpu else torch.float16
    torch.manual_seed(0)
    config = shape.config(N, smoke)
    with torch.device(device):  # initialised where it runs: the large vocabularies init fast there
        model = shape.model(config)
    model = model.to(dtype).eval()
    set_implementation(model, "sdpa")
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in shape.inputs(config, N, batch, device).items()}
    return config, model, inputs


@dataclass
class Measured:
    """Every variant's times of one model at one N (``times[provider][suffix]``), and what ran."""

    config: Any
    times: dict[str, dict[str, float]]
    block: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    def update(self, other: Measured) -> None:
        """Add ``other``'s times (another kind, measured on a model built again) to each variant's."""
        for provider, times in other.times.items():
            self.times[provider].update(times)


def measure(name: str, N: int, batch: int, kind: str, smoke: bool, cpu: bool = False, reps: int = 3) -> Measured:
    """``timings`` of ``kind`` of each variant of ``name`` at N, on one model built for them."""
    import monarch_convert
    from monarch_convert.patches.registry import get_patch

    config, model, inputs = build(name, N, batch, smoke, cpu)
    m = Measured(config, {"sdpa": timings(model, inputs, kind, smoke, cpu, reps)})
    set_implementation(model, FREE)
    m.times["attention-free"] = timings(model, inputs, kind, smoke, cpu, reps)
    set_implementation(model, "sdpa")
    m.notes["attention-free"] = "attention replaced by a no-op: what the rest of the model costs"
    model_type = SHAPES[name].model_type
    if get_patch(model_type) is None:
        if kind == "wall":
            print(f"{name}: monarch skipped: model_type {model_type!r} is not in monarch_convert's registry "
                  "(measured on SDPA and free attention only)", flush=True)
    else:
        monarch_convert.convert(model, block_size="auto")
        report = monarch_convert.conversion_report(model)
        provider = "monarch-torch" if smoke or cpu else "monarch-triton"
        m.times[provider] = timings(model, inputs, kind, smoke, cpu, reps)
        m.block = report.settings.block_size
        m.notes[provider] = f"{len(report.converted)} of {len(report.modules)} attention modules converted"
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return m


def rows_of(name: str, N: int, batch: int, env: Env, m: Measured, on_cpu: bool) -> list[Row]:
    sdpa, heads = m.times["sdpa"], m.config.num_attention_heads
    return [env.stamp(Row(kernel=f"model:{name}", provider=provider + suffix, dtype="float32" if on_cpu else "float16",
                          batch=batch, heads=heads, seq=N, head_dim=m.config.hidden_size // heads, block=m.block,
                          steps=1, pad_frac=0.0, median_ms=f"{ms:.4f}", speedup_vs_best_sdpa=f"{sdpa[suffix] / ms:.3f}",
                          best_sdpa="sdpa" + suffix, note=m.notes.get(provider, "")))
            for provider, by_kind in m.times.items() for suffix, ms in by_kind.items()]


def summary(name: str, batch: int, N: int, times: dict[str, dict[str, float]]) -> str:
    """One line per kind of timing: each variant's ms and its speedup over SDPA."""
    lines = []
    for suffix, sdpa_ms in times["sdpa"].items():
        parts = [f"{provider} {by_kind[suffix]:.3f} ms (x{sdpa_ms / by_kind[suffix]:.2f})" for provider, by_kind in
                 times.items()]
        lines.append(f"{name} B={batch} N={N} {suffix.lstrip('+') or 'eager'}: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--seqs", nargs="+", type=int, default=None,
                   help="lengths (default: 512 ... 16384 for bert-base and bart-base, 2048 4096 8192 for the "
                        "long-context models; whisper-large is always 1500)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also torch.compile(mode='reduce-overhead')")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cpu", action="store_true", help="the same shapes on the CPU in float32, eager wall time only")
    where.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, eager only: checks the script")
    p.add_argument("--reps", type=int, default=3, help="forwards timed per variant on the CPU (the median is kept)")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    env = whole_model_environment("bench_models.py", args.smoke, args.cpu)
    register_free()
    cases = [(name, N) for name in args.models for N in lengths(name, args.seqs, args.smoke)]
    # Eager wall times of every case first, then compiled ones, then GPU times (torch.profiler): a
    # profiler session leaves each later launch of the process slower on the host (CUPTI;
    # docs/benchmarks-log.md, "Diagnostic round of 2026-12-07"), and so does a compiled model's run for
    # eager calls after it (until code fde3ac3 each provider's compiled run came before the next
    # one's eager run: the attention-free model read slower than SDPA's at batch 8, N = 512).
    measured = {case: measure(*case, args.batch, "wall", args.smoke, args.cpu, args.reps) for case in cases}
    if args.compile and not (args.smoke or args.cpu):
        for case, m in measured.items():
            m.update(measure(*case, args.batch, "compile", False))
    rows: list[Row] = []
    try:
        for (name, N), m in measured.items():
            if not (args.smoke or args.cpu):
                m.update(measure(name, N, args.batch, "gpu", False))
            rows += rows_of(name, N, args.batch, env, m, args.smoke or args.cpu)
            print(summary(name, args.batch, N, m.times), flush=True)
    finally:
        print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'bench_models.csv')}")


def lengths(name: str, seqs: list[int] | None, smoke: bool) -> tuple[int, ...]:
    fixed = SHAPES[name].seqs
    if smoke:
        return (64,)
    if fixed is not None and (seqs is None or len(fixed) == 1):  # Whisper's encoder takes one length
        return fixed
    return tuple(seqs or (512, 1024, 2048, 4096, 8192, 16384))


if __name__ == "__main__":
    main()
