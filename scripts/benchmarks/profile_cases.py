#!/usr/bin/env python
"""Launch MonarchAttention's kernels once per case, for a profiler (Nsight Compute) to capture.

    ncu --section SpeedOfLight --section Occupancy -k regex:'_kernel$' \
        python scripts/benchmarks/profile_cases.py tiles:1:4096 tiles:1:16384 fused:1024:256
    python scripts/benchmarks/profile_cases.py --times tiles:8:4096:1:0.5     # per-kernel device times
    python scripts/benchmarks/profile_cases.py model:bert-base:4096           # host time of a forward

Each case is MODE:BATCH:SEQ[:STEPS[:PAD]] (12 heads, head dim 64, float16, b = ceil(sqrt(N));
MODE is "tiles", "fused" or a knob set of ``bench_utils.VARIANTS``; PAD is the fraction of right
padding of every sequence, with a key-padding mask, or "ones": a mask without padding). Each case
runs twice: the first launch compiles, profile the second. ``--times`` prints each kernel's device
time (median of 20 calls, L2 flushed before each) and the gaps between kernels. ``model:NAME:SEQ``
(NAME one of ``bench_models.py``'s models) prints where the host time of one eager forward of a
converted encoder goes (CPU time per op).
"""

from __future__ import annotations

import sys

import torch
from bench_utils import VARIANTS, Case, kernel_times, sync

from monarch_convert.kernels.triton.plan import Knobs


def profile_model(name: str, seq: int, smoke: bool = False) -> None:
    """Where the host time of one eager forward of ``name`` (a ``bench_models.SHAPES`` name),
    converted, goes: CPU time per op. ``smoke``: its tiny CPU shape (tests)."""
    from bench_models import build

    import monarch_convert

    _, model, inputs = build(name, seq, 1, smoke)
    monarch_convert.convert(model, block_size="auto")
    with torch.no_grad():
        for _ in range(3):
            model(**inputs)
        sync()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(**inputs)
            sync()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))


def run_case(spec: str, times: bool) -> None:
    from monarch_convert.kernels.triton.launch import monarch_attention_triton

    mode, batch, seq, *rest = spec.split(":")
    ones = len(rest) > 1 and rest[1] == "ones"
    pad = float(rest[1]) if len(rest) > 1 and not ones else 0.0
    case = Case(spec, int(batch), int(seq), steps=int(rest[0]) if rest else 1, pad_frac=pad,
                mask="ones" if ones else "pad" if pad else "none")
    q, k, v, mask, _ = case.inputs()
    knobs = VARIANTS[mode] if mode in VARIANTS else Knobs(mode=mode)  # (not .get: Knobs checks its mode)
    fn = lambda: monarch_attention_triton(q, k, v, mask, case.block, case.steps, "post", 0.125,  # noqa: E731
                                          knobs=knobs)
    for _ in range(2):  # compile + warm, then the launch to profile
        fn()
    torch.cuda.synchronize()
    print("ran", spec, flush=True)
    if times:
        for name, us in kernel_times(fn):
            print(f"    {name:24s} {us:8.1f} us", flush=True)


def main(argv: list[str]) -> None:
    if not argv or {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    times = "--times" in argv
    for spec in (a for a in argv if a != "--times"):
        if spec.startswith("model:"):
            _, kind, seq = spec.split(":")
            profile_model(kind, int(seq))
        else:
            run_case(spec, times)


if __name__ == "__main__":
    main(sys.argv[1:])
