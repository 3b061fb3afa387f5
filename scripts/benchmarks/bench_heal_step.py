#!/usr/bin/env python
"""Step rate of healing (``monarch_convert.heal``) a BERT-base-shaped model at long N, against the
same distillation step on SDPA (issue 17's third target: >= 2x at N = 4096 on the H200).

    BENCH_COMMIT=<commit> python scripts/benchmarks/bench_heal_step.py [--seqs 4096 ...] [--batches 1 ...]
        [--max-tokens T] [--steps 50] [--warmup 5] [--profile STEPS] [--host-profile STEPS] [--dtype bfloat16]
        [--trainable attention] [--setting b=64,T=1] [--providers sdpa attention-free monarch]
        [--prefetch heal|one-batch|no-pin|tokenise-only|process|pt-tensors] [--one-batch] [--repeat R]
        [--csv FILE] [--smoke]

One run measures every configuration (N, batch) of ``--seqs`` x ``--batches`` (``--seq`` and
``--batch`` are the same options) with at most ``--max-tokens`` tokens per step, each provider on
each configuration.

The model: a ``BertModel`` built in code from a ``BertConfig`` of BERT-base's shape (12 layers,
hidden 768, 12 heads, intermediate 3072, vocabulary 30522, ``max_position_embeddings`` = N, so that
``block_size="auto"`` is ceil(sqrt(N)): 64 at N = 4096), random weights (seeded), in ``--dtype`` on
CUDA. The data: synthetic texts of N or more words from a 1,000-word WordPiece vocabulary built in
code, so every example is N tokens long (an attention mask of ones, as a tokenizer gives it).
Random weights attend almost uniformly, so the converted model is already close to its original:
the run measures speed, not what healing wins back (docs/results.md has that for real models).

Providers, each on a freshly built model of the same weights (one at a time on the GPU, so that
each peak memory is its own):

- ``monarch`` (rows ``monarch-triton``; ``monarch-torch`` in ``--smoke``): the model converted with
  ``--setting`` (default ``block_size="auto"``) and healed by ``monarch_convert.heal`` itself
  (target="hidden", ``--trainable``, ``--batch`` examples of N tokens per step, its default AdamW,
  teacher = the same weights on softmax), with one held-out text (heal measures its fidelity
  before the first step and after the last: outside the timed steps).
- ``sdpa``: heal's own step on the unconverted model. ``heal`` refuses a model that is not
  converted, so the loop is driven here with heal's pieces (``healing.loop.Run`` and
  ``train``, ``healing.teacher.Teacher``, ``healing.trainable.selected``, ``healing.data``):
  the same objective, optimizer, schedule, gradient clipping, trainable weights (selected on a
  conversion, then reverted: no weight is touched, the same parameters move), data order, batch
  and N; the teacher is the same weights on SDPA, as heal's teacher is for the converted model.
  Student and teacher are then the same function: the loss is 0 and the updates are 0, but every
  step does the full work (the backward and AdamW run on zero gradients).
- ``attention-free``: as ``sdpa``, but every student attention call is a no-op
  (``bench_models.free_attention``, which still hands q and k gradients, so that their projections'
  backward and updates run; the teacher still runs SDPA): what the step costs when the student's
  attention costs nothing, the most any attention kernel can gain here.

Timing: ``healing.loop._one_step`` (the function heal's loop calls once per step: teacher forward,
student forward and backward, clipping, AdamW and the fidelity of the batch; the batch's inputs
come tokenised, prepared on a worker thread during the step before) is wrapped for the run
(``StepTimer``). The first ``--warmup`` steps (Triton compilation, cuBLAS/cuDNN set-up) are not
timed; the next ``--steps`` run as heal runs them, with no synchronisation between them (heal's
loop reads nothing from the device per step: the host queues the next step's kernels while the
device runs this one's), ``torch.cuda.synchronize()`` before the first and after the last: ms/step
is their wall time over their number. (Until code `df29827` each step was synchronised before and
after and the median reported: that hid the overlap of one step's host work with the device work
of the step before.) "host ms" is the median duration of a timed step's call on the host: the
host's own work plus any wait for the device inside the step; near ms/step, the step is host-bound.
``--profile STEPS``: once every configuration and provider is timed, each provider runs again
(warm-up, one step, then STEPS steps under ``torch.profiler``, CUDA activity) and the device time of
those steps' kernels per step is reported ("kernel ms"): well below ms/step, the device idles,
waiting for the host. (A profiler session leaves every later launch of the process slower on the
host; until code ea9d9d1 the profiled steps followed each provider's timed ones, and slowed the
steps timed after them.) ``--host-profile STEPS``: after the timed steps, STEPS more under Python's
``cProfile`` (the tokenising worker's functions showed in it too on the GPU machine's Python 3.12),
whose functions by their own time and by their cumulative time go to
``heal_host_<provider>_N<N>_b<batch>.txt`` beside the CSV, the first few printed: where a host-bound
step's time goes. (cProfile slows Python: compare the providers' shares, not the milliseconds with
ms/step.)
Heal's set-up and held-out measurements are outside the wrapped function, so the monarch provider
is timed on the same code as the others.
Peak memory: ``torch.cuda.max_memory_allocated`` over the provider's run (weights included).
Host work is timed apart: heal tokenising a batch (on the worker thread, beside the step before)
and, for the monarch provider, inside each step, the teacher's switch to softmax and back
(``conversion.base_attention``: the configs name the base implementation, then ``monarch_sdpa``
again; until code `df29827` a revert and conversion again, 0.7 ms). ``--one-batch``: every step
trains on the first batch, tokenised once, so that nothing is tokenised beside the timed steps: the
difference from a run without it is what heal's worker costs the step (27% of the converted
model's step at N = 4096 on an H100, docs/benchmarks-log.md). ``--prefetch`` (``prefetching``) splits
that cost: ``no-pin``, ``tokenise-only`` and ``process`` (tokenising in a spawned process);
``pt-tensors`` tokenises as heal did until code 14e4c4f (the tokenizer's own torch tensors, whose
``torch.tensor`` of Python lists holds the interpreter lock). Host work timed apart also includes
the lock: how long a host-bound loop of tiny torch ops (each one releases the interpreter lock and
takes it back, as the step's launches do) waits per batch tokenised beside it, with heal's
tokenising and the tokenizer's "pt" tensors (``lock_wait_ms``). ``--repeat R``: every provider
runs R times per configuration, in turn (sdpa, monarch, sdpa, ...: a host's drift hits each
alike); each row is the provider's run of median ms/step, its note lists every run's.
Printed last: a table of ms/step, steps/s, peak MiB, the step rate over SDPA's at the same N and
batch, host ms and kernel ms; then per configuration SDPA's and monarch's ms/step, their ratio and
the FLOPs bound on it (``flops_bound``: the ratio if the student's attention cost nothing, at equal
FLOP rates; the arithmetic below). CSV rows (``bench_utils.Row``, kernel ``heal:bert-base``,
``median_ms`` = ms/step, ``speedup_vs_best_sdpa`` = the step rate over SDPA's; steps/s, peak
memory, host and kernel ms and the FLOPs bound in ``note``) go to ``--csv`` (default
``$OUT/bench_heal_step.csv``).

``--smoke``: tiny shapes (2 layers, hidden 64) on the CPU in float32, N = 64 (or ``--seqs``), 1
warm-up and 2 timed steps, to check the script itself (tests/test_bench_heal_step.py); there
``--profile`` sums the CPU time of the ops.

What to expect (matmul FLOPs = 2 x MACs, BERT-base, N = 4096, batch 1, trainable="attention"):

- linear layers, forward: 2 N L (4 d^2 + 2 d I) = 2 * 4096 * 12 * 7,077,888 = 695.8 GFLOP;
- softmax attention, forward: L * 2 * (2 N^2 d) = 618.5 GFLOP (47% of the forward's 1314.3);
- Monarch (b = 64, T = 1), forward: L * 2 * heads * 5 N b dh = 24.2 GFLOP (``monarch_convert.flops``);
- backward: the input gradient of every linear layer (1x its forward: layer 0's projections train,
  so the gradient runs through every layer) plus the weight gradient of the trained projections
  (4 d^2 of 12 d^2 per token: 1/3 of the forward) = 4/3 * 695.8 = 927.7 GFLOP; attention's
  backward ~2.5x its forward (flash: QK^T recomputed, then dV, dP, dQ, dK: 5 matmuls for 2) =
  1546.3 GFLOP for softmax, ~60 for Monarch.

One SDPA step: teacher 1314.3 + student forward 1314.3 + backward 927.7 + 1546.3 = 5102.6 GFLOP
(attention 2783 of it, 55%). One monarch step: teacher 1314.3 (heal's teacher runs softmax
attention: 618.5 of it) + 720.0 + 988.1 = 3022.4 GFLOP: 1.69x fewer. With the student's attention
free the step is still 2937.8 GFLOP: at equal FLOP rates no attention kernel can make healing more
than 5102.6 / 2937.8 = 1.74x faster at N = 4096 (1.64x with trainable="all": 5566.5 / 3401.7),
because the softmax teacher stays. 2x needs SDPA's attention (its backward especially) to run at a
lower FLOP rate than the GEMMs (at 70% of their rate the bound is about 1.97x, at 50% 2.2x), a
longer N (at 16384: 53.8 / 19.2 TFLOP = 2.8x), or a cheaper teacher; the ``attention-free`` rows
measure the bound on the machine. ``step_flops`` and ``flops_bound`` make these counts for any N,
batch and ``--trainable`` (a LoRA adapter's weight gradients counted as nothing).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import random
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from bench_models import FREE, register_free, set_implementation
from bench_utils import Env, Row, kernel_ms, sync, wall_ms, whole_model_environment, write_csv

from monarch_convert.config import parse_setting

BASE = dict(layers=12, hidden=768, heads=12, intermediate=3072)
SMOKE = dict(layers=2, hidden=64, heads=4, intermediate=128)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(1000)]
LR = 1e-4  # heal's default, given to every provider
PROVIDERS = ("sdpa", "attention-free", "monarch")
TRAIN_TEXTS = 8  # distinct training examples (heal cycles through them); one more is held out
TOKENISE, SWITCH = "tokenising a batch (worker thread)", "monarch teacher's softmax switch"  # host work of a step
LOCK, LOCK_PT = ("step thread's wait per batch tokenised beside it", "the same with the tokenizer's \"pt\" tensors")


@dataclass
class Measured:
    """One provider's run at one (N, batch): ms per timed step, host ms per step, kernel time per
    profiled step, peak memory and what it ran."""

    provider: str
    seq: int
    batch: int
    ms: float  # wall time of the timed steps / their number
    host_ms: list[float]  # each timed step's call, not synchronised
    losses: list[float]  # every step's, warm-up included
    peak_mib: float
    block: int
    num_steps: int
    note: str
    kernel_ms: float | None = None  # --profile: the kernels' device time per step
    host_profile: pstats.Stats | None = None  # --host-profile: the step calls' Python profile
    recorded: dict[str, int] = field(default_factory=dict)  # Triton launches recorded during the timed steps


@dataclass
class StepTimer:
    """Heal's step function (``healing.loop._one_step``) wrapped for one run of ``warmup`` +
    ``timed`` + ``profiled`` steps. The timed steps run as heal runs them, the host queuing work
    ahead of the device: synchronised only before the first and after the last, their wall time
    divided by their number is the time per step. Each call's own duration (host time, plus any
    wait for the device inside it) is kept. With ``profiled`` > 0, that many more steps run under
    ``torch.profiler`` (after the timed ones: its tracing slows the host) and the device time of
    their kernels is summed (``bench_utils.kernel_ms``). Then ``host_profiled`` more run under
    ``cProfile`` (``host_profile``). ``recorded``: the Triton replays (forward, backward) recorded
    or recorded again during the timed steps (``replays_recorded``): 0 when every attention call
    of a timed step replays launches recorded in the warm-up, as it should."""

    warmup: int
    timed: int
    profiled: int = 0
    host_profiled: int = 0
    calls: int = 0
    host_ms: list[float] = field(default_factory=list)
    losses: list[Any] = field(default_factory=list)  # device tensors until read_losses()
    ms: float = 0.0
    kernel_ms: float | None = None
    host_profile: pstats.Stats | None = None
    recorded: dict[str, int] = field(default_factory=dict)
    _replays: dict[str, dict] = field(default_factory=dict)
    _start: float = 0.0
    _profiler: Any = None
    _host_profiler: cProfile.Profile | None = None

    @contextmanager
    def around_heal_steps(self):
        from monarch_convert.healing import loop

        step = loop._one_step

        def timed(run: Any, teacher: Any, batch: dict):
            self._before(self.calls)
            start = time.perf_counter()
            out = step(run, teacher, batch)
            self.host_ms.append((time.perf_counter() - start) * 1e3)
            self.losses.append(out[0])
            self.calls += 1
            self._after(self.calls)
            return out

        loop._one_step = timed  # heal's train() looks it up in the module at every step
        try:
            yield self
        finally:
            loop._one_step = step
            if self._profiler is not None:
                self._profiler.__exit__(None, None, None)
            if self._host_profiler is not None:
                self._host_profiler.disable()

    def _before(self, call: int) -> None:
        if call == self.warmup:
            self._replays = replay_snapshot()
            sync()
            self._start = time.perf_counter()
        elif call == self.warmup + self.timed and self.profiled:
            self._profiler = torch.profiler.profile(activities=[_activity()])
            self._profiler.__enter__()
        if call == self.warmup + self.timed + self.profiled and self.host_profiled:
            sync()
            self._host_profiler = cProfile.Profile()
            self._host_profiler.enable()

    def _after(self, done: int) -> None:
        if done == self.warmup + self.timed:
            sync()
            self.ms = (time.perf_counter() - self._start) * 1e3 / self.timed
            self.recorded = replays_recorded(self._replays, replay_snapshot())
        elif self._profiler is not None and done == self.warmup + self.timed + self.profiled:
            sync()
            self._profiler.__exit__(None, None, None)
            self.kernel_ms = kernel_ms(self._profiler) / self.profiled
            self._profiler = None
        if self._host_profiler is not None and done == self.warmup + self.timed + self.profiled + self.host_profiled:
            self._host_profiler.disable()
            sync()
            self.host_profile = pstats.Stats(self._host_profiler)
            self._host_profiler = None

    def read_losses(self) -> list[float]:
        return [float(loss) for loss in self.losses]


_REPLAY_MODULES = {"forward": "monarch_convert.kernels.triton.launch",
                   "backward": "monarch_convert.kernels.triton.backward_launch"}


def replay_snapshot() -> dict[str, dict]:
    """Which replay each key of the Triton launchers' ``REPLAYS`` holds, by identity (an empty
    dict for a launcher not imported: no Triton call ran)."""
    snapshot = {}
    for name, module in _REPLAY_MODULES.items():
        replays = getattr(sys.modules.get(module), "REPLAYS", {})
        snapshot[name] = {key: id(replay) for key, replay in replays.items()}
    return snapshot


def replays_recorded(before: dict[str, dict], after: dict[str, dict]) -> dict[str, int]:
    """Keys holding a replay in ``after`` that they did not hold in ``before``: calls that went
    through Triton's launcher (about 50 µs a launch) instead of replaying."""
    return {name: sum(before.get(name, {}).get(key) != ident for key, ident in keys.items())
            for name, keys in after.items()}


# What prepares each step's inputs (``--prefetch``), as the rows' notes say it.
PREFETCH = {
    "heal": "",
    "one-batch": "every step on the first batch (--one-batch)",
    "no-pin": "each batch tokenised on heal's worker thread, not pinned (--prefetch no-pin)",
    "tokenise-only": "each batch tokenised on heal's worker thread, every step on the first, pinned "
                     "(--prefetch tokenise-only)",
    "process": "each batch tokenised in a spawned process, pinned on heal's worker thread (--prefetch process)",
    "pt-tensors": "each batch tokenised to the tokenizer's torch tensors, as heal did until 14e4c4f "
                  "(--prefetch pt-tensors)",
}
_DATA: Any = None  # ``--prefetch process``: the worker process's copy of heal's training data


def _start_worker(data: Any) -> None:
    global _DATA
    _DATA = data
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent reports an interruption, once


def _worker_inputs(ids: list[int]) -> dict:
    return _DATA.inputs(ids)


@contextmanager
def prefetching(kind: str):
    """``--prefetch``: how heal's prefetcher (``healing.loop.Prefetcher``, a worker thread that
    tokenises and pins each next batch beside the step) is replaced, so that the difference from
    heal's own shows what each part of its work costs a host-bound step: ``one-batch`` (alias
    ``--one-batch``) hands every step the first batch, tokenised once (nothing prepared beside the
    timed steps); ``no-pin`` tokenises without pinning; ``tokenise-only`` tokenises each batch
    but hands out the first one, pinned; ``process`` tokenises in a spawned process (no interpreter
    lock shared with the step) and pins on the thread; ``pt-tensors`` tokenises to the tokenizer's
    torch tensors (``HealData.tokenised(ids, "pt")``), as heal did until code 14e4c4f."""
    if kind == "heal":
        yield
        return
    from monarch_convert.healing import loop

    saved = {name: loop.Prefetcher.__dict__[name] for name in ("_inputs", "__enter__", "__exit__")}
    first: list[dict] = []

    def once(self, step: int) -> dict:
        if not first:
            first.append(saved["_inputs"](self, step))
        return first[0]

    def tokenised_first(self, step: int) -> dict:
        inputs = self._batch(step)
        if not first:
            first.append(self._pinned(inputs))
        return first[0]

    def enter(self):
        saved["__enter__"](self)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.process = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_start_worker, initargs=(self.run.train_data,))
        return self

    def exit_(self, *exc: Any) -> None:
        self.process.shutdown(wait=True, cancel_futures=True)
        saved["__exit__"](self, *exc)

    def in_process(self, step: int) -> dict:
        return self._pinned(self.process.submit(_worker_inputs, loop.batch_ids(self.run, step)).result())

    def pt_tensors(self, step: int) -> dict:
        return self._pinned(self.run.train_data.tokenised(loop.batch_ids(self.run, step), "pt"))

    replaced = {"one-batch": {"_inputs": once}, "no-pin": {"_inputs": loop.Prefetcher._batch},
                "tokenise-only": {"_inputs": tokenised_first},
                "process": {"_inputs": in_process, "__enter__": enter, "__exit__": exit_},
                "pt-tensors": {"_inputs": pt_tensors}}[kind]
    for name, fn in replaced.items():
        setattr(loop.Prefetcher, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(loop.Prefetcher, name, fn)


def lock_wait_ms(work: Any, ops: int = 4000, rounds: int = 5) -> float:
    """How long a host-bound thread waits for ``work`` run beside it on another thread, per call
    of ``work``: a loop of ``ops`` in-place adds on a tiny CPU tensor (each releases the interpreter
    lock and takes it back, as the step's launches and ops do) timed ``rounds`` times alone and
    ``rounds`` times beside a thread calling ``work`` without pause; the difference of the medians
    over the calls of ``work`` per loop (medians: other load on the machine slows both alike). Work
    that releases the lock (a tokenizer's Rust encoding) costs the loop next to nothing; Python or
    torch calls that hold it (``torch.tensor`` of a list) cost the loop about their own time."""
    import threading

    x = torch.zeros(8)

    def loop_ms() -> float:
        start = time.perf_counter()
        for _ in range(ops):
            x.add_(1.0)
        return (time.perf_counter() - start) * 1e3

    alone = statistics.median(loop_ms() for _ in range(rounds))
    stop, calls = threading.Event(), [0]

    def beside() -> None:
        while not stop.is_set():
            work()
            calls[0] += 1

    thread = threading.Thread(target=beside, daemon=True)
    thread.start()
    try:
        work_before = calls[0]
        loops = [loop_ms() for _ in range(rounds)]
        during = calls[0] - work_before
    finally:
        stop.set()
        thread.join()
    return max(0.0, statistics.median(loops) - alone) * rounds / max(during, 1)


def _activity() -> Any:
    """CUDA kernels; on the CPU (``--smoke``) its ops, to check the path."""
    activities = torch.profiler.ProfilerActivity
    return activities.CUDA if torch.cuda.is_available() else activities.CPU


def step_flops(shape: dict, seq: int, batch: int, trainable: str, student_attention: bool) -> float:
    """FLOPs of one heal step (the module docstring's count): the teacher's forward (softmax
    attention), the student's forward and its backward (the input gradient of every linear layer,
    the weight gradient of the trained ones, attention's backward at 2.5x its forward);
    ``student_attention=False``: the student's attention costs nothing."""
    d, layers, inter = shape["hidden"], shape["layers"], shape["intermediate"]
    tokens = seq * batch
    linear = 2 * tokens * layers * (4 * d * d + 2 * d * inter)
    softmax = 4 * seq * seq * d * layers * batch
    trained = {"all": linear, "attention": 2 * tokens * layers * 4 * d * d, "lora": 0}[trainable]  # LoRA's: ~0
    student = softmax if student_attention else 0
    return (linear + softmax) + (linear + student) + (linear + trained + 2.5 * student)


def flops_bound(shape: dict, seq: int, batch: int, trainable: str) -> float:
    """The most any student attention can speed a step up at equal FLOP rates: SDPA's step FLOPs
    over those of the step with the student's attention free (the softmax teacher stays)."""
    return step_flops(shape, seq, batch, trainable, True) / step_flops(shape, seq, batch, trainable, False)


# ---------------------------------------------------------------------------------- model and data


def bert(a: argparse.Namespace, device: str) -> Any:
    """The BERT-base-shaped model (``SMOKE`` shapes with ``--smoke``) on SDPA, seeded, in eval mode."""
    import transformers

    s = SMOKE if a.smoke else BASE
    config = transformers.BertConfig(vocab_size=30522, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                     num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
                                     max_position_embeddings=a.seq, attn_implementation="sdpa")
    torch.manual_seed(a.seed)
    with torch.device(device):
        model = transformers.BertModel(config)
    return model.to(getattr(torch, a.dtype)).eval()


def make_tokenizer(seq: int) -> Any:
    """A WordPiece tokenizer of ``WORDS`` (every word one token), built in code."""
    import transformers

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    return transformers.BertTokenizer(vocab=vocab, do_lower_case=False, model_max_length=seq)


def make_texts(count: int, seq: int, seed: int) -> list[str]:
    """``count`` texts of ``seq`` random words: ``seq`` tokens each once truncated ([CLS] and [SEP] in)."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=seq)) for _ in range(count)]


def host_costs(a: argparse.Namespace, tokenizer: Any, texts: list[str]) -> dict[str, float]:
    """Host work of a step: heal tokenising a batch (every provider; on heal's worker thread,
    beside the step before), what that costs a host-bound thread beside it (``lock_wait_ms``, also
    for the tokenizer's own tensors, ``HealData.tokenised(ids, "pt")``) and, inside the step, the monarch teacher's
    switch of the converted model to softmax and back (``conversion.base_attention``; monarch only),
    timed on a model without storage (neither touches the weights)."""
    import monarch_convert as mc
    from monarch_convert.conversion import base_attention
    from monarch_convert.healing.data import HealData

    data = HealData("text", texts[1:], None, tokenizer, a.seq)
    meta = mc.convert(bert(a, "meta"), a.setting)

    def switch() -> None:
        with base_attention(meta):
            pass

    batch = [i % len(data) for i in range(a.batch)]
    return {TOKENISE: wall_ms(lambda: data.inputs(batch), reps=10, warmup=1),
            SWITCH: wall_ms(switch, reps=10, warmup=1),
            LOCK: lock_wait_ms(lambda: data.inputs(batch)),
            LOCK_PT: lock_wait_ms(lambda: data.tokenised(batch, "pt"))}


# -------------------------------------------------------------------------------------- providers


def heal_converted(model: Any, a: argparse.Namespace, tokenizer: Any, texts: list[str]) -> tuple[Any, str]:
    """Convert and heal with ``monarch_convert.heal``; (the conversion's settings, a note)."""
    import monarch_convert as mc

    mc.convert(model, a.setting)
    report = mc.heal(model, texts[1:], steps=total_steps(a), trainable=a.trainable, lr=LR, batch_size=a.batch,
                     seq_len=a.seq, target="hidden", processor=tokenizer, eval_data=texts[:1], progress=False,
                     seed=a.seed)
    before, after = (f"{f[report.headline]:.4f}" for f in (report.fidelity_before, report.fidelity_after))
    note = (f"monarch_convert.heal, trainable={report.trainable} ({report.trained_parameters:,} weights); "
            f"held-out {report.headline} {before} -> {after}")
    return mc.conversion_report(model).settings, note


class SdpaTeacher:
    """The ``attention-free`` provider's teacher: heal's teacher run with the model on SDPA, the
    student's no-op attention put back after."""

    def __init__(self, model: Any, teacher: Any):
        self.model, self.teacher = model, teacher

    def __call__(self, inputs: dict) -> Any:
        set_implementation(self.model, "sdpa")
        try:
            return self.teacher(inputs)
        finally:
            set_implementation(self.model, FREE)


def heal_unconverted(model: Any, a: argparse.Namespace, tokenizer: Any, texts: list[str],
                     free_student: bool) -> tuple[Any, str]:
    """heal's step on the model as it is (SDPA), or with the student's attention a no-op; (the
    settings of the conversion the trainable weights were selected on, a note)."""
    import monarch_convert as mc
    from monarch_convert.healing import loop
    from monarch_convert.healing.data import heal_data
    from monarch_convert.healing.objective import headline
    from monarch_convert.healing.teacher import Teacher
    from monarch_convert.healing.trainable import selected

    settings = mc.conversion_report(mc.convert(model, a.setting)).settings
    with selected(model, a.trainable) as chosen:  # heal's selection names the converted modules' projections
        mc.revert(model)  # no weight was touched: the same parameters, on SDPA again
        run = loop.Run.create(model, steps=total_steps(a), batch_size=a.batch, lr=LR, weight_decay=0.0,
                              warmup_steps=None, seed=a.seed, progress=False, checkpoint_every=None,
                              checkpoint_dir=None)
        data = heal_data(texts[1:], tokenizer, model, max_length=a.seq)
        run.start(chosen, "hidden", headline("hidden", True), data, data)
        teacher = Teacher(model, chosen)
        if free_student:
            teacher = SdpaTeacher(model, teacher)
            set_implementation(model, FREE)
        try:
            loop.train(run, teacher, {})  # heal's own loop (its batches prepared a step ahead), no checkpoint
        finally:
            set_implementation(model, "sdpa")
        note = f"heal's step driven here, trainable={chosen.kind} ({chosen.count(model):,} weights)"
    return settings, note


def total_steps(a: argparse.Namespace) -> int:
    return a.warmup + a.steps + a.profile_steps + a.host_profile_steps


def measure(provider: str, a: argparse.Namespace, tokenizer: Any, texts: list[str]) -> Measured:
    """One provider's run on a fresh model of the same weights, at ``a.seq`` and ``a.batch``."""
    model = bert(a, a.device)
    cuda = a.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer(a.warmup, a.steps, a.profile_steps, a.host_profile_steps)
    with timer.around_heal_steps(), prefetching(a.prefetch):
        if provider == "monarch":
            settings, note = heal_converted(model, a, tokenizer, texts)
        else:
            settings, note = heal_unconverted(model, a, tokenizer, texts, free_student=provider == "attention-free")
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    losses = timer.read_losses()
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    if timer.calls != total_steps(a):
        raise SystemExit(f"{provider}: {timer.calls} steps timed, expected {total_steps(a)}")
    name = provider if provider != "monarch" else "monarch-torch" if a.smoke else "monarch-triton"
    return Measured(name, a.seq, a.batch, timer.ms, timer.host_ms[a.warmup:a.warmup + a.steps], losses, peak,
                    settings.block_size, settings.num_steps, note, timer.kernel_ms, timer.host_profile, timer.recorded)


# ---------------------------------------------------------------------------------------- output


def _sdpa_ms(results: list[Measured], m: Measured) -> float | None:
    """SDPA's ms/step at ``m``'s N and batch, if it ran."""
    return next((r.ms for r in results if r.provider == "sdpa" and (r.seq, r.batch) == (m.seq, m.batch)), None)


def write_host_profile(m: Measured, a: argparse.Namespace, folder: str, shown: int = 8) -> str:
    """``m``'s host profile per step, by own and by cumulative time, to a text file in ``folder``;
    returns its path, after printing the ``shown`` functions of most own time."""
    path = os.path.join(folder, f"heal_host_{m.provider}_N{m.seq}_b{m.batch}.txt")
    steps = a.host_profile_steps
    with open(path, "w") as f:
        f.write(f"{m.provider}, N={m.seq}, batch={m.batch}: {steps} step calls under cProfile "
                f"({m.host_profile.total_tt * 1e3 / steps:.2f} ms of profiled Python per step)\n")
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            m.host_profile.stream = text
            m.host_profile.sort_stats(order).print_stats(40)
            f.write(f"\n== by {order} (whole run of {steps} steps)\n{text.getvalue()}")
    top = sorted(m.host_profile.stats.items(), key=lambda kv: -kv[1][2])[:shown]
    print(f"N={m.seq} batch={m.batch} {m.provider}: host profile -> {path}; own time per step: " +
          ", ".join(f"{func[2]} ({os.path.basename(func[0])}:{func[1]}) {tt * 1e3 / steps:.2f} ms"
                    for func, (_, _, tt, _, _) in top), flush=True)
    return path


def _profile_text(m: Measured) -> str:
    if m.kernel_ms is None:
        return ""
    return f"; kernels {m.kernel_ms:.2f} ms per step ({100 * m.kernel_ms / m.ms:.0f}% of the wall time)"


def _recorded_text(m: Measured) -> str:
    if m.provider != "monarch-triton":
        return ""
    return "; Triton launches recorded during the timed steps (not replayed): " + ", ".join(
        f"{name} {count}" for name, count in m.recorded.items())


def rows_of(results: list[Measured], a: argparse.Namespace, env: Env, host: dict) -> list[Row]:
    """CSV rows; ``host``: ``host_costs`` by (N, batch)."""
    s = SMOKE if a.smoke else BASE
    rows = []
    prefetch = f"; {PREFETCH[a.prefetch]}" if PREFETCH[a.prefetch] else ""
    for m in results:
        sdpa, costs = _sdpa_ms(results, m), host[(m.seq, m.batch)]
        note = (f"{1e3 / m.ms:.3f} steps/s; peak {m.peak_mib:.0f} MiB; mean of {len(m.host_ms)} steps after "
                f"{a.warmup} warm-up, synchronised before the first and after the last; host ms per step call "
                f"{statistics.median(m.host_ms):.2f} (median){_profile_text(m)}{_recorded_text(m)}; "
                f"loss {m.losses[0]:.4g} -> {m.losses[-1]:.4g}; {m.note}{prefetch}; FLOPs bound on the rate over SDPA "
                f"{flops_bound(s, m.seq, m.batch, a.trainable):.2f}x; host ms of a step: " +
                ", ".join(f"{k} {v:.2f}" for k, v in costs.items() if k != SWITCH or m.provider.startswith("monarch")))
        rows.append(env.stamp(Row(
            kernel="heal:bert-base", provider=m.provider, dtype=a.dtype, batch=m.batch, heads=s["heads"], seq=m.seq,
            head_dim=s["hidden"] // s["heads"], block=m.block, steps=m.num_steps, pad_frac=0.0,
            median_ms=f"{m.ms:.4f}", speedup_vs_best_sdpa=f"{sdpa / m.ms:.3f}" if sdpa else "",
            best_sdpa="sdpa" if sdpa else "", note=note)))
    return rows


def table(results: list[Measured], a: argparse.Namespace, env: Env, host: dict) -> str:
    """Every provider's line, then per (N, batch) SDPA's and monarch's ms/step, their ratio and
    the FLOPs bound on it, and the host work of a step."""
    s = SMOKE if a.smoke else BASE
    lines = [f"heal step, {'smoke' if a.smoke else 'BERT-base'} shape, {a.dtype}, trainable={a.trainable}, "
             f"target=hidden{', ' + PREFETCH[a.prefetch] if PREFETCH[a.prefetch] else ''}, {env.gpu}, "
             f"commit {env.commit or '?'}",
             f"{'provider':<16}{'N':>6}{'batch':>6}{'ms/step':>10}{'steps/s':>9}{'peak MiB':>10}{'rate/sdpa':>11}"
             f"{'host ms':>9}{'kernel ms':>11}"]
    for m in results:
        sdpa = _sdpa_ms(results, m)
        ratio = f"{sdpa / m.ms:.2f}x" if sdpa else "-"
        kernels = f"{m.kernel_ms:.3f}" if m.kernel_ms is not None else "-"
        lines.append(f"{m.provider:<16}{m.seq:>6}{m.batch:>6}{m.ms:>10.3f}{1e3 / m.ms:>9.2f}{m.peak_mib:>10.0f}"
                     f"{ratio:>11}{statistics.median(m.host_ms):>9.2f}{kernels:>11}")
    for (seq, batch), costs in host.items():
        by = {m.provider.split("-")[0]: m.ms for m in results if (m.seq, m.batch) == (seq, batch)}
        ratio = f"{by['sdpa'] / by['monarch']:.2f}x" if {"sdpa", "monarch"} <= by.keys() else "-"
        lines.append(f"N={seq} batch={batch}: SDPA {by.get('sdpa', float('nan')):.2f} ms/step, monarch "
                     f"{by.get('monarch', float('nan')):.2f} ms/step, ratio {ratio}, FLOPs bound "
                     f"{flops_bound(s, seq, batch, a.trainable):.2f}x; host work of a step: " +
                     ", ".join(f"{k} {v:.2f} ms" for k, v in costs.items()) +
                     "".join(_recorded_text(m) for m in results if (m.seq, m.batch) == (seq, batch)))
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", "--seq", type=int, nargs="+", default=None,
                   help="tokens per example, N, one configuration each (default 4096; 64 with --smoke)")
    p.add_argument("--batches", "--batch", type=int, nargs="+", default=[1], help="examples per step (default 1)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="skip the configurations of more than this many tokens per step (N x batch)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per provider (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="steps run first and not timed (default 5)")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS", dest="profile_steps",
                   help="once every provider is timed, each runs again with this many steps under "
                        "torch.profiler: kernel time per step")
    p.add_argument("--host-profile", type=int, default=0, metavar="STEPS", dest="host_profile_steps",
                   help="after the timed steps, this many more under cProfile: where each provider's host time "
                        "goes (a text file per provider and configuration beside the CSV)")
    p.add_argument("--prefetch", default="heal", choices=list(PREFETCH),
                   help="what prepares each step's inputs: heal's worker thread (default), or a replacement "
                        "that shows what part of its work costs the step (see the module docstring)")
    p.add_argument("--one-batch", dest="prefetch", action="store_const", const="one-batch",
                   help="the same as --prefetch one-batch: every step trains on the first batch, tokenised once")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="runs per provider and configuration, in turn with the other providers; each row is "
                        "the provider's run of median ms/step (default 1)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--trainable", default="attention", choices=["attention", "all", "lora"])
    p.add_argument("--setting", type=parse_setting, default={"block_size": "auto"},
                   help="conversion setting, e.g. 'b=64,T=1' (default: block_size=auto)")
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, 2 steps: checks the script")
    p.add_argument("--csv", default=None)
    a = p.parse_args(argv)
    a.seqs = a.seqs or [64 if a.smoke else 4096]
    if a.smoke:
        a.steps, a.warmup, a.dtype = 2, 1, "float32"
    a.configs = [(n, b) for n in a.seqs for b in a.batches if a.max_tokens is None or n * b <= a.max_tokens]
    if (min(*a.seqs, *a.batches, a.steps, a.repeat) < 1 or min(a.warmup, a.profile_steps, a.host_profile_steps) < 0
            or not a.configs):
        p.error("--seqs, --batches, --steps and --repeat must be >= 1, --warmup, --profile and --host-profile >= 0, "
                "and --max-tokens must leave a configuration")
    a.device = "cpu" if a.smoke else "cuda"
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    env = whole_model_environment("bench_heal_step.py", a.smoke)
    register_free()
    results, host, configs = [], {}, []
    for seq, batch in a.configs:
        # The timed pass: no torch.profiler session in it (``profiled_again``).
        c = argparse.Namespace(**{**vars(a), "seq": seq, "batch": batch, "profile_steps": 0})
        tokenizer, texts = make_tokenizer(seq), make_texts(TRAIN_TEXTS + 1, seq, a.seed)
        configs.append((c, tokenizer, texts))
        host[(seq, batch)] = host_costs(c, tokenizer, texts)
        runs: dict[str, list[Measured]] = {provider: [] for provider in a.providers}
        for _ in range(a.repeat):  # in turn: a host's drift hits every provider alike
            for provider in a.providers:
                runs[provider].append(measure(provider, c, tokenizer, texts))
                print(f"N={seq} batch={batch} {provider}: {runs[provider][-1].ms:.3f} ms/step", flush=True)
        results.extend(median_run(r) for r in runs.values())
        # Written after each configuration: a run stopped by a time limit keeps the rows it measured.
        path = write_csv(rows_of(results, a, env, host), a.csv, "bench_heal_step.csv")
        for m in results[-len(a.providers):]:
            if m.host_profile is not None:
                write_host_profile(m, a, os.path.dirname(os.path.abspath(path)))
    if a.profile_steps:
        profiled_again(results, configs, a)
        path = write_csv(rows_of(results, a, env, host), a.csv, "bench_heal_step.csv")
    print(f"{len(results)} rows -> {path}")
    print(table(results, a, env, host))


def median_run(runs: list[Measured]) -> Measured:
    """The run of median ms/step (the lower of the middle two for an even count), its note
    listing every run's ms/step when there are several (``--repeat``)."""
    chosen = sorted(runs, key=lambda m: m.ms)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        chosen.note += f"; median of {len(runs)} runs in turn with the other providers, ms/step " + ", ".join(
            f"{m.ms:.3f}" for m in runs)
    return chosen


def profiled_again(results: list[Measured], configs: list, a: argparse.Namespace) -> None:
    """``--profile``: each provider's run again, after every timed one, with ``a.profile_steps``
    steps under torch.profiler after its warm-up and one step more: each result's ``kernel_ms``.
    Apart, because after a profiler session every launch of the process costs more host time
    (docs/benchmarks-log.md, "Diagnostic round of 2026-12-07"), which until code ea9d9d1 slowed every
    step timed after the first provider's."""
    by_case = iter(results)
    for c, tokenizer, texts in configs:
        again = argparse.Namespace(**{**vars(c), "steps": 1, "profile_steps": a.profile_steps,
                                      "host_profile_steps": 0})
        for provider in a.providers:
            m = next(by_case)
            m.kernel_ms = measure(provider, again, tokenizer, texts).kernel_ms
            print(f"N={m.seq} batch={m.batch} {provider}: kernels {m.kernel_ms:.3f} ms per step", flush=True)


if __name__ == "__main__":
    main()
