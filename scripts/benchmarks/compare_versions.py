#!/usr/bin/env python
"""Time another version of the Triton kernels against this tree's, on the same inputs, in one run.

    git worktree add /tmp/old 60edd2f          # or any folder holding that version's kernels/
    python scripts/benchmarks/compare_versions.py /tmp/old [--variants default nopdl] [--cases T2-long padded]
    python scripts/benchmarks/compare_versions.py /tmp/old --check      # only load OLD's kernels (no GPU)

OLD's ``kernels/`` folder is imported as a package of its own next to this tree's (either layout:
``kernels/triton/launch.py``, or ``kernels/triton_monarch.py`` before the kernels/triton/ split). The cases
are ``bench_variants.py``'s; each is timed with OLD's defaults ("old") and with this tree's kernels under
each named knob set, as CUDA-graph replays. Also printed: each output's relative difference from
the old one. Writes CSV rows (kernel = ``compare:<variant>:<case>``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Callable

import torch
from bench_utils import VARIANTS, bench, environment, graphed, selected, write_csv
from bench_variants import CASES


def import_kernels(folder: str) -> tuple[object, Callable]:
    """(launcher module, ``run(q, k, v, mask, b, T, scale)``) of the kernels/ folder under
    ``folder``, imported as package ``_old_kernels``."""
    pkg = os.path.join(os.path.abspath(folder), "kernels")
    layouts = {"triton/launch.py": "_old_kernels.triton.launch", "triton_monarch.py": "_old_kernels.triton_monarch"}
    found = [(f, name) for f, name in layouts.items() if os.path.isfile(os.path.join(pkg, f))]
    if not found:
        sys.exit(f"no kernels/triton/launch.py or kernels/triton_monarch.py under {folder}")
    spec = importlib.util.spec_from_file_location("_old_kernels", os.path.join(pkg, "__init__.py"),
                                                  submodule_search_locations=[pkg])
    package = importlib.util.module_from_spec(spec)
    sys.modules["_old_kernels"] = package
    spec.loader.exec_module(package)
    module = importlib.import_module(found[0][1])
    if hasattr(module, "Knobs"):
        def run(q, k, v, mask, b, T, scale):
            return module.monarch_attention_triton(q, k, v, mask, b, T, "post", scale)
    else:  # before the split: knobs were a dict, ``_cfg``
        def run(q, k, v, mask, b, T, scale):
            return module.monarch_attention_triton(q, k, v, mask, b, T, "post", scale, _cfg={})
    return module, run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", help="folder holding the other version's kernels/ folder")
    p.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS), metavar="NAME")
    p.add_argument("--cases", nargs="+", metavar="NAME", help="only the cases whose name contains one of these")
    p.add_argument("--check", action="store_true", help="load OLD's kernels, print their file and stop")
    p.add_argument("--csv", default=None, help="CSV file (default: compare_kernels.csv in $OUT or .)")
    args = p.parse_args(argv)
    module, old = import_kernels(args.old)
    if args.check:  # where the launcher and what it imports came from
        print(module.__file__)
        print(module.output_like.__module__)
        return
    if not torch.cuda.is_available():
        sys.exit("compare_versions.py needs a CUDA GPU")
    from monarch_convert.kernels.triton.launch import monarch_attention_triton

    env, rows = environment(), []
    print(f"{env.gpu}; {env.versions}; commit {env.commit}; old kernels from {module.__file__}", flush=True)
    for case in selected(CASES, args.cases):
        q, k, v, mask, n_real = case.inputs()
        b, T, scale = case.block, case.steps, case.head_dim ** -0.5
        runs = [("old", lambda: old(q, k, v, mask, b, T, scale))]
        runs += [(n, lambda kn=VARIANTS[n]: monarch_attention_triton(q, k, v, mask, b, T, "post", scale, knobs=kn))
                 for n in args.variants]
        ref, line = None, []
        for label, fn in runs:
            out = fn().float()
            ref = out if ref is None else ref
            ms = bench(graphed(fn))
            line.append(f"{label}={ms:.4f} (diff {((out - ref).norm() / ref.norm()).item():.0e})")
            rows.append(case.row(f"compare:{label}:{case.name}", "triton+graph", ms, env, n_real,
                                 note=f"old={args.old}" if label == "old" else str(VARIANTS[label])))
        print(f"{case.name} B={case.batch} N={case.seq} T={T}: " + "  ".join(line), flush=True)
    print(f"{len(rows)} rows -> {write_csv(rows, args.csv, 'compare_kernels.csv')}")


if __name__ == "__main__":
    main()
