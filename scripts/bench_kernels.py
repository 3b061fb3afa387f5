#!/usr/bin/env python
"""Benchmark MonarchAttention's kernels (and whole converted encoders) against PyTorch SDPA on one GPU.

    python scripts/bench_kernels.py                       # kernel cases (the paper's, T=2, bf16, padded)
    python scripts/bench_kernels.py --mode model          # converted BERT-base / BART-base encoders
    python scripts/bench_kernels.py --mode all --csv results.csv

Kernel mode: providers are MonarchAttention (``triton``), MonarchAttention (``torch`` reference)
and ``scaled_dot_product_attention`` restricted to each of the flash, cuDNN and efficient backends
(``torch.nn.attention.sdpa_kernel``). Times are the median of ``triton.testing.do_bench`` (which
flushes the L2 cache before each run). The unavoidable-bytes floor is reading q, k, v once and
writing the output once (real tokens only for a padded batch), at the device-to-device copy
bandwidth measured in the same run; ``floor_fraction`` = floor time / kernel time (1.0 = at the
floor; 0.4 = within 2.5x of it).

Model mode: BERT-base-sized and BART-base encoders (random weights, float16, batch 1) built in code,
timed with their SDPA attention and again after ``monarch_convert.convert`` (``block_size="auto"``,
backend auto = Triton), for N = 512 .. 16384.

Prints a table and writes CSV rows (one per case and provider).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import sys
import time

import torch

CSV_FIELDS = [
    "kernel", "provider", "dtype", "batch", "heads", "seq", "head_dim", "block", "steps", "pad_frac",
    "median_ms", "speedup_vs_best_sdpa", "best_sdpa", "achieved_gbps", "floor_fraction", "copy_gbps",
    "gpu", "versions", "date", "note",
]
SDPA = ("flash", "cudnn", "efficient")


def versions() -> str:
    import triton

    parts = [f"torch {torch.__version__}", f"triton {triton.__version__}", f"cuda {torch.version.cuda}"]
    try:
        import transformers

        parts.append(f"transformers {transformers.__version__}")
    except Exception:
        pass
    return "; ".join(parts)


def bench(fn, rep=100, warmup=25) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def copy_bandwidth() -> float:
    """GB/s of a large device-to-device copy, counting bytes read plus bytes written."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), rep=200)
    del src, dst
    return 2 * n / ms / 1e6


def graphed(fn):
    """``fn`` captured in a CUDA graph; returns the replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    return g.replay


def sdpa_fn(backend, q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
          "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]

    def run():
        with sdpa_kernel(be):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    return run


def kernel_cases(quick: bool):
    """(name, dtype, batch, heads, seq, head_dim, steps, pad_frac)."""
    f16, bf16 = torch.float16, torch.bfloat16
    cases = []
    batches = (8, 64, 256, 1024, 4096) if not quick else (256, 1024)
    for B in batches:
        cases.append(("paper-short", f16, B, 12, 256, 64, 1, 0.0))
    seqs = (1024, 2048, 4096, 8192, 16384) if not quick else (4096, 16384)
    for N in seqs:
        cases.append(("paper-long", f16, 1, 12, N, 64, 1, 0.0))
    for B in ((256, 1024) if not quick else (1024,)):
        cases.append(("T2-short", f16, B, 12, 256, 64, 2, 0.0))
    for N in ((1024, 4096, 16384) if not quick else (4096, 16384)):
        cases.append(("T2-long", f16, 1, 12, N, 64, 2, 0.0))
    cases.append(("bf16-short", bf16, 1024, 12, 256, 64, 1, 0.0))
    for N in (4096, 16384):
        cases.append(("bf16-long", bf16, 1, 12, N, 64, 1, 0.0))
    cases.append(("unpadded", f16, 8, 12, 4096, 64, 1, 0.0))
    cases.append(("padded-50%", f16, 8, 12, 4096, 64, 1, 0.5))
    return cases


def selected(cases, args):
    return [c for c in cases if not args.cases or any(s in c[0] for s in args.cases)]


def run_kernels(args, gpu, vers, copy_gbps, rows):
    from monarch_convert.kernels.ops import monarch_attention

    date = datetime.date.today().isoformat()
    for name, dtype, B, H, N, d, T, pad_frac in selected(kernel_cases(args.quick), args):
        b = math.isqrt(N - 1) + 1  # ceil(sqrt(N))
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=dtype, generator=g) for _ in range(3))
        mask = None
        real = B * N
        if pad_frac > 0:
            # Every sequence has (1 - pad_frac) * N real tokens, at its start (right padding).
            n_real = int(round(N * (1 - pad_frac)))
            mask = (torch.arange(N, device="cuda") < n_real)[None].expand(B, N).contiguous()
            real = B * n_real
        floor_bytes = real * H * (3 * d + d) * q.element_size()
        floor_ms = floor_bytes / (copy_gbps * 1e6)
        providers = {}
        providers["triton"] = lambda: monarch_attention(q, k, v, mask, block_size=b, num_steps=T, backend="triton")
        if not args.no_reference and B * H * N <= 12 * 16384 * 16:
            providers["torch"] = lambda: monarch_attention(q, k, v, mask, block_size=b, num_steps=T, backend="torch")
        sdpa_mask = None
        if mask is not None:
            sdpa_mask = mask[:, None, None, :]
        for be in SDPA:
            if sdpa_mask is None:
                providers[be] = sdpa_fn(be, q, k, v)
            else:
                providers[be] = None  # SDPA with a mask: timed below for efficient/cudnn only
        if sdpa_mask is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            for be, sb in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
                def run(sb=sb):
                    with sdpa_kernel(sb):
                        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask)
                providers[be] = run
        times = {}
        for prov, fn in providers.items():
            if fn is None:
                continue
            try:
                fn()
                torch.cuda.synchronize()
                times[prov] = bench(fn)
                if prov != "torch":  # the same work replayed from a CUDA graph: no launch overhead
                    times[prov + "+graph"] = bench(graphed(fn))
            except Exception as e:  # a backend that does not support the case
                print(f"  {name} B={B} N={N} {prov}: {type(e).__name__}: {str(e).splitlines()[0][:100]}",
                      file=sys.stderr)
        for prov, ms in times.items():
            # Eager against eager SDPA, graphed against graphed SDPA.
            suffix = "+graph" if prov.endswith("+graph") else ""
            sd = {p: t for p, t in times.items() if p in [x + suffix for x in SDPA]}
            best = min(sd, key=sd.get) if sd else ""
            rows.append(dict(
                kernel=name, provider=prov, dtype=str(dtype).replace("torch.", ""), batch=B, heads=H, seq=N,
                head_dim=d, block=b, steps=T, pad_frac=pad_frac, median_ms=f"{ms:.5f}",
                speedup_vs_best_sdpa=f"{sd[best] / ms:.3f}" if best else "",
                best_sdpa=best, achieved_gbps=f"{floor_bytes / ms / 1e6:.1f}",
                floor_fraction=f"{floor_ms / ms:.3f}", copy_gbps=f"{copy_gbps:.0f}",
                gpu=gpu, versions=vers, date=date, note="",
            ))
        sd = {p: t for p, t in times.items() if p in SDPA}
        best = min(sd, key=sd.get) if sd else ""
        t = times.get("triton")
        print(f"{name:12s} {str(dtype)[6:]:8s} B={B:5d} N={N:6d} b={b:4d} T={T} pad={pad_frac:.1f} "
              f"triton={t if t is None else round(t, 4)} ms  best sdpa={best}:{sd.get(best, float('nan')):.4f} ms  "
              f"x{(sd[best] / t) if (t and best) else float('nan'):.2f}  floor={floor_ms / t if t else 0:.2f}  "
              f"graphed: triton={times.get('triton+graph', float('nan')):.4f} "
              f"sdpa={min([times[p + '+graph'] for p in SDPA if p + '+graph' in times] or [float('nan')]):.4f}",
              flush=True)
        del q, k, v
        torch.cuda.empty_cache()


def variant_cases():
    """(name, dtype, batch, heads, seq, head_dim, steps, pad_frac)."""
    f16 = torch.float16
    return [("paper-short", f16, 64, 12, 256, 64, 1, 0.0), ("paper-short", f16, 1024, 12, 256, 64, 1, 0.0),
            ("T2-short", f16, 1024, 12, 256, 64, 2, 0.0), ("short-512", f16, 256, 12, 512, 64, 1, 0.0),
            ("paper-long", f16, 1, 12, 4096, 64, 1, 0.0), ("paper-long", f16, 1, 12, 8192, 64, 1, 0.0),
            ("paper-long", f16, 1, 12, 16384, 64, 1, 0.0), ("T2-long", f16, 1, 12, 4096, 64, 2, 0.0),
            ("T2-long", f16, 1, 12, 16384, 64, 2, 0.0), ("unpadded", f16, 8, 12, 4096, 64, 1, 0.0),
            ("padded-50%", f16, 8, 12, 4096, 64, 1, 0.5)]


# Knobs of ``monarch_attention_triton``'s ``_cfg`` (kernels/triton_monarch.py).
VARIANTS = {
    "default": {},
    "tiles": {"mode": "tiles"},
    "fused": {"mode": "fused"},
    "rows128": {"max_rows": 128},
    "w8": {"mode": "tiles", "r_warps": 8, "l_warps": 8},
    "g64w4": {"group_rows": 64, "warps": 4, "r_warps": 4, "l_warps": 4},  # small tiles before variant 19
    "nopdl": {"pdl": False},
    "s32": {"s_rows": 32},
}


def case_inputs(dtype, B, H, N, d, pad_frac):
    """b = ceil(sqrt(N)), seeded q, k, v, the key-padding mask (right padding; None without) and
    the real tokens per sequence, of a variant case."""
    b = math.isqrt(N - 1) + 1
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=dtype, generator=g) for _ in range(3))
    n_real = int(round(N * (1 - pad_frac)))
    mask = None if pad_frac == 0 else (torch.arange(N, device="cuda") < n_real)[None].expand(B, N).contiguous()
    return b, q, k, v, mask, n_real


def triton_row(kernel, dtype, B, H, N, d, b, T, pad_frac, ms, copy_gbps, gpu, vers, note, floor_fraction=""):
    """A CSV row of one Triton timing without SDPA comparison (variants, compare_kernels.py)."""
    return dict(kernel=kernel, provider="triton", dtype=str(dtype)[6:], batch=B, heads=H, seq=N, head_dim=d,
                block=b, steps=T, pad_frac=pad_frac, median_ms=f"{ms:.5f}", speedup_vs_best_sdpa="", best_sdpa="",
                achieved_gbps="", floor_fraction=floor_fraction, copy_gbps=f"{copy_gbps:.0f}", gpu=gpu,
                versions=vers, date=datetime.date.today().isoformat(), note=note)


def run_variants(args, gpu, vers, copy_gbps, rows):
    from monarch_convert.kernels.triton_monarch import monarch_attention_triton

    for name, dtype, B, H, N, d, T, pad_frac in selected(variant_cases(), args):
        b, q, k, v, mask, n_real = case_inputs(dtype, B, H, N, d, pad_frac)
        floor_ms = B * n_real * H * 4 * d * q.element_size() / (copy_gbps * 1e6)
        line = []
        for vname, cfg in VARIANTS.items():
            if cfg.get("mode") == "fused" and B * H < 256:
                continue  # one program per head: far too few programs
            fn = lambda: monarch_attention_triton(q, k, v, mask, b, T, "post", d**-0.5, _cfg=cfg)  # noqa: E731
            try:
                fn()
                ms = bench(graphed(fn))  # kernel time, without launch overhead
            except Exception as e:
                print(f"  variant {vname}: {type(e).__name__}: {str(e)[:100]}", file=sys.stderr)
                continue
            line.append(f"{vname}={ms:.4f}")
            rows.append(triton_row(f"variant:{vname}:{name}", dtype, B, H, N, d, b, T, pad_frac, ms, copy_gbps, gpu,
                                   vers, str(cfg), floor_fraction=f"{floor_ms / ms:.3f}"))
        print(f"variants {name} B={B} N={N} T={T}: " + " ".join(line), flush=True)


def build_encoder(kind: str, N: int):
    import transformers as T

    if kind == "bert-base":
        cfg = T.BertConfig(max_position_embeddings=N, attn_implementation="sdpa")
        model = T.BertModel(cfg, add_pooling_layer=False)
    else:
        cfg = T.BartConfig(max_position_embeddings=N, attn_implementation="sdpa")  # bart-base sizes
        model = T.BartModel(cfg).get_encoder()
    return model.cuda().half().eval(), cfg.vocab_size


def _gpu_ms(fwd, reps: int = 5) -> float:
    """Median over ``reps`` forwards of the GPU time one forward keeps the GPU busy: the sum of its
    kernels' device times (torch.profiler), i.e. without host launch overhead. (Not a CUDA graph
    of the whole forward: the SDPA model captured that way, in bfloat16 without a mask, took
    836 ms at N = 16384 against 30 ms eager on an H100, so it does not run the eager path.)"""
    from torch.profiler import ProfilerActivity, profile

    times = []
    for _ in range(reps):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fwd()
            torch.cuda.synchronize()
        times.append(sum(e.self_device_time_total for e in prof.key_averages()) / 1e3)
    return sorted(times)[len(times) // 2]


def run_model(args, gpu, vers, rows):
    """BERT-base / BART-base encoders, float16, batch 1, an attention mask of ones (what a tokenizer
    gives): wall time of an eager forward (host launch overhead included) and its GPU time."""
    import monarch_convert

    date = datetime.date.today().isoformat()
    seqs = (512, 1024, 2048, 4096, 8192, 16384) if not args.quick else (2048, 8192)
    for kind in ("bert-base", "bart-base"):
        for N in seqs:
            torch.manual_seed(0)
            model, vocab = build_encoder(kind, N)
            ids = torch.randint(4, vocab, (1, N), device="cuda")
            am = torch.ones_like(ids)

            def fwd():
                with torch.no_grad():
                    return model(input_ids=ids, attention_mask=am)

            def timings():
                fwd()
                return bench(fwd, rep=200), _gpu_ms(fwd)

            sdpa = timings()
            monarch_convert.convert(model, block_size="auto")
            b = math.isqrt(N - 1) + 1  # block_size="auto": ceil(sqrt(max positions)) = ceil(sqrt(N))
            mon = timings()
            for i, suffix in enumerate(("", "+gpu")):
                for prov, ms in (("sdpa", sdpa[i]), ("monarch-triton", mon[i])):
                    rows.append(dict(kernel=f"model:{kind}", provider=prov + suffix, dtype="float16", batch=1,
                                     heads=12, seq=N, head_dim=64, block=b, steps=1, pad_frac=0.0,
                                     median_ms=f"{ms:.4f}", speedup_vs_best_sdpa=f"{sdpa[i] / ms:.3f}",
                                     best_sdpa="sdpa" + suffix, achieved_gbps="", floor_fraction="", copy_gbps="",
                                     gpu=gpu, versions=vers, date=date,
                                     note="GPU time (sum of kernel times)" if suffix else "eager wall time"))
            print(f"model {kind:10s} N={N:6d} b={b}: eager sdpa={sdpa[0]:.3f} monarch={mon[0]:.3f} ms "
                  f"x{sdpa[0] / mon[0]:.2f}; GPU time sdpa={sdpa[1]:.3f} monarch={mon[1]:.3f} ms "
                  f"x{sdpa[1] / mon[1]:.2f}", flush=True)
            del model
            torch.cuda.empty_cache()


def print_table(rows):
    kern = [r for r in rows if not r["kernel"].startswith(("model:", "variant:"))]
    if kern:
        print("\n| case | dtype | B | N | b | T | pad | triton ms | flash ms | cudnn ms | efficient ms | torch ref ms "
              "| speed-up vs best SDPA | triton graphed ms | best SDPA graphed ms | speed-up (graphed) "
              "| floor fraction (graphed) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        keys = []
        for r in kern:
            key = (r["kernel"], r["dtype"], r["batch"], r["seq"], r["steps"], r["pad_frac"])
            if key not in keys:
                keys.append(key)
        for key in keys:
            by = {r["provider"]: r for r in kern
                  if (r["kernel"], r["dtype"], r["batch"], r["seq"], r["steps"], r["pad_frac"]) == key}
            t = by.get("triton", {})
            tg = by.get("triton+graph", {})
            cell = lambda p: f"{float(by[p]['median_ms']):.4f}" if p in by else "-"  # noqa: E731
            any_r = next(iter(by.values()))
            bg = tg.get("best_sdpa", "")
            print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {any_r['block']} | {key[4]} | {key[5]} | "
                  f"{cell('triton')} | {cell('flash')} | {cell('cudnn')} | {cell('efficient')} | {cell('torch')} | "
                  f"{t.get('speedup_vs_best_sdpa', '-')} ({t.get('best_sdpa', '')}) | {cell('triton+graph')} | "
                  f"{cell(bg) if bg else '-'} ({bg.replace('+graph', '')}) | {tg.get('speedup_vs_best_sdpa', '-')} | "
                  f"{tg.get('floor_fraction', '-')} |")
    mod = [r for r in rows if r["kernel"].startswith("model:")]
    if mod:
        print("\n| model | N | b | SDPA eager ms | MonarchAttention eager ms | speed-up (eager) "
              "| SDPA GPU ms | MonarchAttention GPU ms | speed-up (GPU time) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in mod:
            if r["provider"] != "monarch-triton":
                continue
            by = {x["provider"]: x for x in mod if x["kernel"] == r["kernel"] and x["seq"] == r["seq"]}
            cell = lambda p: f"{float(by[p]['median_ms']):.3f}" if p in by else "-"  # noqa: E731
            ratio = lambda p: by[p]["speedup_vs_best_sdpa"] if p in by else "-"  # noqa: E731
            print(f"| {r['kernel'][6:]} | {r['seq']} | {r['block']} | {cell('sdpa')} | {cell('monarch-triton')} | "
                  f"{ratio('monarch-triton')} | {cell('sdpa+gpu')} | {cell('monarch-triton+gpu')} | "
                  f"{ratio('monarch-triton+gpu')} |")


def write_csv(rows, path, default_name: str) -> str:
    """Write ``rows`` to ``path`` (default: ``default_name`` in $OUT or the current folder)."""
    path = path or os.path.join(os.environ.get("OUT", "."), default_name)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--mode", choices=("kernels", "model", "variants", "all"), default="kernels")
    p.add_argument("--csv", default=None, help="CSV file to write (default: bench_kernels.csv in $OUT or .)")
    p.add_argument("--quick", action="store_true", help="fewer cases")
    p.add_argument("--cases", nargs="+", metavar="NAME", help="only the kernel cases whose name contains one of these")
    p.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference provider")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_kernels.py needs a CUDA GPU")
    gpu = torch.cuda.get_device_name()
    vers = versions()
    t0 = time.time()
    copy_gbps = copy_bandwidth()
    print(f"{gpu}; {vers}; copy bandwidth {copy_gbps:.0f} GB/s (read + write)", flush=True)
    rows = []
    try:
        if args.mode in ("kernels", "all"):
            run_kernels(args, gpu, vers, copy_gbps, rows)
        if args.mode in ("variants", "all"):
            run_variants(args, gpu, vers, copy_gbps, rows)
        if args.mode in ("model", "all"):
            run_model(args, gpu, vers, rows)
    finally:
        path = write_csv(rows, args.csv, "bench_kernels.csv")
        print(f"\n{len(rows)} rows -> {path} ({time.time() - t0:.0f} s)")
        print_table(rows)


if __name__ == "__main__":
    main()
