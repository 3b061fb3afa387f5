"""What every benchmark script shares: the CSV row, the environment it records, timing on the
GPU, the cases' inputs, and the unavoidable-bytes floor (docs/algorithm.md, section 3).

Scripts in this folder import it as ``bench_utils`` (they run as ``python scripts/benchmarks/X.py``,
which puts this folder first on ``sys.path``)."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from monarch_convert.kernels.triton.plan import Knobs

SDPA_BACKENDS = ("flash", "cudnn", "efficient")

# Named knob sets of the launcher, for variant runs and A/B comparisons.
VARIANTS = {
    "default": Knobs(),
    "tiles": Knobs(mode="tiles"),
    "fused": Knobs(mode="fused"),
    # The on-chip kernel (N' <= 256, head dims <= 64; elsewhere the default plan) at its own warps
    # (plan._onchip_warps) and at each count.
    "onchip": Knobs(mode="onchip"),
    "onchip-w4": Knobs(mode="onchip", warps=4),
    "onchip-w8": Knobs(mode="onchip", warps=8),
    "onchip-w16": Knobs(mode="onchip", warps=16),
    "rows128": Knobs(max_rows=128),
    "w8": Knobs(mode="tiles", r_warps=8, l_warps=8),
    "g64w4": Knobs(group_rows=64, warps=4, r_warps=4, l_warps=4),  # small tiles before variant 19
    "nopdl": Knobs(pdl=False),
    "s32": Knobs(s_rows=32),
    "chunk32m": Knobs(chunk_bytes=32 << 20),  # heads in chunks above 32 MiB of intermediates
    "ingrid": Knobs(layout_in_grid=True),  # the mask's layout in the first grid, whatever its size
    "layoutlaunch": Knobs(layout_in_grid=False),  # the mask's layout in a launch of its own
    "g16w1": Knobs(group_rows=16, warps=1, r_warps=1, l_warps=1),  # 16-row tiles of one warp (variant 21)
    # aL in the output wherever it can be (LaunchPlan.al_home; the default only where both steps'
    # tiles have at most 32 rows, N <= 1024; above 4096, one output L-step program per offset, looping
    # over its rows), with 8 warps there or without software pipelining (3 stages keep 57 KB of shared
    # memory, 1 stage 41 KB: kernel_resources.py).
    "alhome": Knobs(al_home=True),
    "alhome-w8": Knobs(al_home=True, l_warps=8),
    "alhome-st1": Knobs(al_home=True, stages=1),
    "chunk16m": Knobs(chunk_bytes=16 << 20),  # heads in chunks above 16 MiB of intermediates
    "alhome-c16m": Knobs(al_home=True, chunk_bytes=16 << 20),  # both: two chunks at N = 16384, batch 1
    # Registers per thread of the tiled steps (Triton's maxnreg): at most 128 in every step, or no cap
    # anywhere (the default caps grouped 64-row, 4-warp tiles only: plan._register_cap, variant 26).
    "cap128": Knobs(maxnreg=128),
    "nocap": Knobs(maxnreg=0),
    # aL never in the output (the scratch holds it, as before b394ef6), with and without the cap
    # (variant 29: aL in the output cost batch 8, N = 2048 about 11%, which made it the default only
    # on 32-row tiles).
    "noalhome": Knobs(al_home=False),
    "noalhome-nocap": Knobs(al_home=False, maxnreg=0),
    # aL in the output with 8 warps in both tiled steps: no spills under the cap (kernel_resources.py
    # --warps 8), where 4 warps spill 16-24 B, but 1.1-2.1x the default's time (variant 30).
    "alhome-rw8": Knobs(al_home=True, r_warps=8, l_warps=8),
}


@dataclass
class Row:
    """One CSV row: one timing of one provider on one case. ``median_ms`` is eager unless the
    provider ends in ``+graph`` (CUDA-graph replays); ``floor_fraction`` = floor time / time."""

    kernel: str
    provider: str
    dtype: str
    batch: int
    heads: int
    seq: int
    head_dim: int
    block: int
    steps: int
    pad_frac: float
    median_ms: str
    speedup_vs_best_sdpa: str = ""
    best_sdpa: str = ""
    achieved_gbps: str = ""
    floor_fraction: str = ""
    copy_gbps: str = ""
    gpu: str = ""
    versions: str = ""
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())
    commit: str = ""
    note: str = ""


FIELDS = [f.name for f in dataclasses.fields(Row)]


@dataclass(frozen=True)
class Env:
    """The machine and code a run measured."""

    gpu: str
    versions: str
    commit: str
    copy_gbps: float

    def stamp(self, row: Row) -> Row:
        row.gpu, row.versions, row.commit = self.gpu, self.versions, self.commit
        row.copy_gbps = f"{self.copy_gbps:.0f}" if self.copy_gbps else ""
        return row


def versions() -> str:
    import triton

    parts = [f"torch {torch.__version__}", f"triton {triton.__version__}", f"cuda {torch.version.cuda}"]
    try:
        import transformers

        parts.append(f"transformers {transformers.__version__}")
    except ImportError:
        pass
    return "; ".join(parts)


def commit() -> str:
    """The commit measured: $BENCH_COMMIT (set it where the tree travels without .git), else git's."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except OSError:
        return ""


def environment(measure_copy: bool = True) -> Env:
    return Env(torch.cuda.get_device_name(), versions(), commit(), copy_bandwidth() if measure_copy else 0.0)


def whole_model_environment(script: str, smoke: bool, cpu: bool = False) -> Env:
    """The environment of a whole-model benchmark: a CUDA GPU (exits without one); with ``cpu``
    the CPU, named with its thread count; with ``smoke`` the CPU on one thread (a check of the
    script, not a measurement: one thread is fastest on a shared CPU)."""
    import sys

    if not (smoke or cpu) and not torch.cuda.is_available():
        sys.exit(f"{script} needs a CUDA GPU (or --cpu, --smoke)")
    if smoke:
        torch.set_num_threads(1)
        return Env("cpu", versions(), commit(), 0.0)
    if cpu:
        return Env(f"cpu: {cpu_name()}, {torch.get_num_threads()} threads", versions(), commit(), 0.0)
    return environment(measure_copy=False)


def cpu_name() -> str:
    """The processor's model name (Linux), or the platform's word for it."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def sync() -> None:
    """Wait for the GPU's queued work, where there is a GPU (scripts with a CPU ``--smoke`` mode)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def wall_ms(fn: Callable, reps: int = 3, warmup: int = 0) -> float:
    """Median wall-clock ms of ``reps`` calls of ``fn()`` after ``warmup`` untimed ones (host work,
    or a whole call on the CPU, where nothing runs asynchronously)."""
    import statistics
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench(fn: Callable, rep: int = 100, warmup: int = 25) -> float:
    """Median ms of ``fn`` (``triton.testing.do_bench``: L2 flushed before each run)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def copy_bandwidth() -> float:
    """GB/s of a large device-to-device copy, counting bytes read plus bytes written."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    return 2 * n / bench(lambda: dst.copy_(src), rep=200) / 1e6


def graphed(fn: Callable) -> Callable:
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


def sdpa_fn(backend: str, q, k, v, mask: Optional[torch.Tensor] = None) -> Callable:
    """SDPA restricted to one backend; ``mask`` (batch, seq) bool as a broadcast key mask."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
          "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
    attn_mask = None if mask is None else mask[:, None, None, :]

    def run():
        with sdpa_kernel(be):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    return run


@dataclass(frozen=True)
class Case:
    """A kernel case: float16 unless said, 12 heads, head dim 64, b = ceil(sqrt(N)). ``mask``:
    "none", "ones" (a mask with no padding) or "pad" (``pad_frac`` of each sequence right-padded)."""

    name: str
    batch: int
    seq: int
    steps: int = 1
    pad_frac: float = 0.0
    mask: str = "none"
    dtype: torch.dtype = torch.float16
    heads: int = 12
    head_dim: int = 64

    @property
    def block(self) -> int:
        return math.isqrt(self.seq - 1) + 1

    def inputs(self, seed: int = 0):
        """Seeded q, k, v, the key-padding mask (or None) and the real tokens per sequence."""
        B, H, N, d = self.batch, self.heads, self.seq, self.head_dim
        g = torch.Generator(device="cuda").manual_seed(seed)
        q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=self.dtype, generator=g) for _ in range(3))
        n_real = int(round(N * (1 - self.pad_frac)))
        mask = None
        if self.mask != "none":
            mask = (torch.arange(N, device="cuda") < n_real)[None].expand(B, N).contiguous()
        return q, k, v, mask, n_real

    def floor_bytes(self, n_real: int) -> int:
        """Read q, k, v once and write the output once, real tokens only."""
        return self.batch * n_real * self.heads * 4 * self.head_dim * torch.finfo(self.dtype).bits // 8

    def row(self, kernel: str, provider: str, ms: float, env: Env, n_real: int, **extra) -> Row:
        floor_ms = self.floor_bytes(n_real) / (env.copy_gbps * 1e6) if env.copy_gbps else 0.0
        row = Row(kernel=kernel, provider=provider, dtype=str(self.dtype)[6:], batch=self.batch, heads=self.heads,
                  seq=self.seq, head_dim=self.head_dim, block=self.block, steps=self.steps, pad_frac=self.pad_frac,
                  median_ms=f"{ms:.5f}", achieved_gbps=f"{self.floor_bytes(n_real) / ms / 1e6:.1f}",
                  floor_fraction=f"{floor_ms / ms:.3f}" if floor_ms else "", **extra)
        return env.stamp(row)


def write_csv(rows: list[Row], path: Optional[str], default_name: str) -> str:
    """Write ``rows`` to ``path`` (default: ``default_name`` in $OUT or the current folder)."""
    path = path or os.path.join(os.environ.get("OUT", "."), default_name)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(dataclasses.asdict(r) for r in rows)
    return path


def selected(cases: list[Case], names: Optional[list[str]]) -> list[Case]:
    """The cases whose name contains one of ``names`` (all without)."""
    return [c for c in cases if not names or any(s in c.name for s in names)]


def kernel_ms(prof: Any) -> float:
    """The device time (ms) of every kernel (and copy) a finished ``torch.profiler.profile`` saw;
    of every op for a profile of CPU activity only (where no device ran)."""
    cuda = torch.profiler.ProfilerActivity.CUDA in prof.activities
    return sum(e.self_device_time_total if cuda else e.self_cpu_time_total for e in prof.key_averages()) / 1e3


def kernel_times(fn: Callable, calls: int = 20) -> list[tuple[str, float]]:
    """Each kernel's median device time (µs) over ``calls`` calls of ``fn`` (L2 flushed before each),
    then the median span from the first kernel's start to the last one's end."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            flush.zero_()
            fn()
        torch.cuda.synchronize()
    per_call, call = [], []
    for e in sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda e: e.time_range.start):
        if "fill" in e.name or "zero" in e.name.lower() or "elementwise" in e.name:  # the L2 flush
            if call:
                per_call.append(call)
            call = []
        else:
            call.append((e.name, e.time_range.start, e.time_range.end))
    per_call.append(call)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    out = [(name, med([c[i][2] - c[i][1] for c in per_call])) for i, (name, _, _) in enumerate(per_call[0])]
    return out + [("first start -> last end", med([c[-1][2] - c[0][1] for c in per_call]))]
