#!/usr/bin/env python
"""Whole encoders on SDPA and converted (``monarch_convert.convert``, block_size="auto"), float16,
random weights built in code, an attention mask of ones (what a tokenizer gives).

    python scripts/benchmarks/bench_models.py [--models bert-base bart-base] [--seqs 1024 4096] [--batch 1]
                                         [--compile]

Per model and N: eager wall time (host launch overhead included), GPU time (the sum of the
forward's kernel times, torch.profiler: what the GPU is kept busy), and with ``--compile`` the wall
time under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs). Writes CSV rows
(kernel = ``model:<name>``, provider ``sdpa`` / ``monarch-triton`` with ``+gpu`` / ``+compile``).
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from bench_utils import Row, bench, environment, write_csv


def build_encoder(kind: str, N: int):
    """(model, vocabulary size) of a random-weight encoder shaped like ``kind``, float16, on the GPU."""
    import transformers as T

    if kind == "bert-base":
        cfg = T.BertConfig(max_position_embeddings=N, attn_implementation="sdpa")
        model = T.BertModel(cfg, add_pooling_layer=False)
    elif kind == "bart-base":
        cfg = T.BartConfig(max_position_embeddings=N, attn_implementation="sdpa")
        model = T.BartModel(cfg).get_encoder()
    else:
        raise SystemExit(f"unknown model {kind!r} (bert-base, bart-base)")
    return model.cuda().half().eval(), cfg.vocab_size


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
        times.append(sum(e.self_device_time_total for e in prof.key_averages()) / 1e3)
    return sorted(times)[len(times) // 2]


def timings(model, ids, am, compile_too: bool) -> dict[str, float]:
    def fwd(m=model):
        with torch.no_grad():
            return m(input_ids=ids, attention_mask=am)

    fwd()
    out = {"": bench(fwd, rep=200), "+gpu": gpu_ms(fwd)}
    if compile_too:
        torch._dynamo.reset()
        compiled = torch.compile(model, mode="reduce-overhead")
        for _ in range(3):
            fwd(compiled)
        out["+compile"] = bench(lambda: fwd(compiled), rep=200)
    return out


def run(kind: str, N: int, batch: int, env, compile_too: bool) -> list[Row]:
    import monarch_convert

    torch.manual_seed(0)
    model, vocab = build_encoder(kind, N)
    ids = torch.randint(4, vocab, (batch, N), device="cuda")
    am = torch.ones_like(ids)
    sdpa = timings(model, ids, am, compile_too)
    monarch_convert.convert(model, block_size="auto")
    mon = timings(model, ids, am, compile_too)
    b = math.isqrt(N - 1) + 1  # block_size="auto": ceil(sqrt(max positions)) = ceil(sqrt(N))
    rows = []
    for suffix, ms in mon.items():
        for prov, t in (("sdpa", sdpa[suffix]), ("monarch-triton", ms)):
            rows.append(env.stamp(Row(kernel=f"model:{kind}", provider=prov + suffix, dtype="float16", batch=batch,
                                      heads=12, seq=N, head_dim=64, block=b, steps=1, pad_frac=0.0,
                                      median_ms=f"{t:.4f}", speedup_vs_best_sdpa=f"{sdpa[suffix] / t:.3f}",
                                      best_sdpa="sdpa" + suffix)))
    print(f"{kind:10s} B={batch} N={N:6d}: " + "  ".join(
        f"{s or 'eager'} sdpa={sdpa[s]:.3f} monarch={mon[s]:.3f} x{sdpa[s] / mon[s]:.2f}" for s in mon), flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["bert-base", "bart-base"])
    p.add_argument("--seqs", nargs="+", type=int, default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also torch.compile(mode='reduce-overhead')")
    p.add_argument("--csv", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_models.py needs a CUDA GPU")
    env, rows = environment(measure_copy=False), []
    try:
        for kind in args.models:
            for N in args.seqs:
                rows += run(kind, N, args.batch, env, args.compile)
                torch.cuda.empty_cache()
    finally:
        print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'bench_models.csv')}")


if __name__ == "__main__":
    main()
