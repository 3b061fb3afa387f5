#!/usr/bin/env python
"""Time another version of the Triton kernels against this tree's, on the same inputs, in one run.

    git worktree add /tmp/old 0bc2635          # or any folder holding that version's kernels/
    python scripts/compare_kernels.py /tmp/old [--variants default nopdl g64w4] [--cases T2-long padded]

OLD's ``kernels/`` folder is imported as a package of its own next to this tree's. The cases are
``bench_kernels.py``'s variant cases (float16, 12 heads, head dim 64, b = ceil(sqrt(N))); each is
timed with OLD's defaults ("old") and with this tree's kernels under each named knob set of
``bench_kernels.VARIANTS``, as CUDA-graph replays (``triton.testing.do_bench`` median). Also
printed: the relative difference of each output from the old one. Writes CSV rows like
``bench_kernels.py`` (kernel = ``compare:<variant>:<case>``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

import torch

from bench_kernels import (VARIANTS, bench, case_inputs, copy_bandwidth, graphed, selected, triton_row,
                           variant_cases, versions, write_csv)


def import_kernels(folder: str):
    """``triton_monarch`` of the kernels/ folder under ``folder``, as package ``_old_kernels``."""
    pkg = os.path.join(os.path.abspath(folder), "kernels")
    spec = importlib.util.spec_from_file_location("_old_kernels", os.path.join(pkg, "__init__.py"),
                                                  submodule_search_locations=[pkg])
    if spec is None or not os.path.isfile(os.path.join(pkg, "triton_monarch.py")):
        sys.exit(f"no kernels/triton_monarch.py under {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_old_kernels"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("_old_kernels.triton_monarch")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("old", help="folder holding the other version's kernels/ folder")
    p.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS), metavar="NAME",
                   help="knob sets of this tree's kernels (bench_kernels.VARIANTS; default: default)")
    p.add_argument("--cases", nargs="+", metavar="NAME", help="only the cases whose name contains one of these")
    p.add_argument("--csv", default=None, help="CSV file to write (default: compare_kernels.csv in $OUT or .)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("compare_kernels.py needs a CUDA GPU")
    old = import_kernels(args.old)
    from monarch_convert.kernels import triton_monarch as new

    gpu, vers = torch.cuda.get_device_name(), versions()
    copy_gbps = copy_bandwidth()
    print(f"{gpu}; {vers}; old kernels from {args.old}", flush=True)
    rows = []
    for name, dtype, B, H, N, d, T, pad_frac in selected(variant_cases(), args):
        b, q, k, v, mask, _ = case_inputs(dtype, B, H, N, d, pad_frac)
        ref, line = None, []
        for label, mod, cfg in [("old", old, {})] + [(n, new, VARIANTS[n]) for n in args.variants]:
            fn = lambda: mod.monarch_attention_triton(q, k, v, mask, b, T, "post", d**-0.5, _cfg=cfg)  # noqa: E731
            out = fn().float()
            ref = out if ref is None else ref
            diff = ((out - ref).norm() / ref.norm()).item()
            ms = bench(graphed(fn))
            line.append(f"{label}={ms:.4f} (diff {diff:.0e})")
            rows.append(triton_row(f"compare:{label}:{name}", dtype, B, H, N, d, b, T, pad_frac, ms, copy_gbps, gpu,
                                   vers, f"old={args.old}" if label == "old" else str(cfg)))
        print(f"{name} B={B} N={N} T={T}: " + "  ".join(line), flush=True)
    print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'compare_kernels.csv')}")


if __name__ == "__main__":
    main()
