"""The training loop of :func:`~monarch_convert.healing.core.heal` and the held-out measurement:
:class:`Run` holds what a run carries from step to step (optimizer, schedule, step, data), and
what a checkpoint saves of it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation.distributed import Distributed
from ..evaluation.fidelity import add_sums, mean_of_sums
from ..interrupts import Interrupted, held
from ..stop_points import stop_point
from . import checkpoint as checkpoints
from . import objective
from .data import HealData, step_indices


@dataclass
class Run:
    model: Any
    dist: Distributed
    accelerator: Any
    device: Any
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    seed: int
    progress: bool
    checkpoint_every: int | None
    checkpoint_dir: Path | None
    session_start: float = field(default_factory=time.perf_counter)
    step: int = 0
    previous_elapsed_s: float = 0.0  # training time of the sessions before this one (resumed runs)
    resumed_from: int | None = None
    before: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    updating: bool = False  # inside a weight update: an interruption there leaves no consistent state
    # Set by start():
    chosen: Any = None
    target: str = ""
    key: str = ""
    train_data: Any = None
    held_out: Any = None
    student: Any = None
    optimizer: Any = None
    scheduler: Any = None
    trained: list = field(default_factory=list)  # the weights that move (``chosen.parameters``), looked up once
    log: StepLog = field(default_factory=lambda: StepLog())

    @classmethod
    def create(cls, model: Any, *, warmup_steps: int | None, steps: int, **settings: Any) -> Run:
        """A run on the model's device, or on this process's device under ``accelerate launch``."""
        from accelerate import Accelerator

        device = next(model.parameters()).device
        dist = Distributed(str(device))
        accelerator = Accelerator(cpu=device.type == "cpu", device_placement=False)
        if dist.world > 1:
            device = accelerator.device
            model.to(device)
        warmup = min(100, steps // 10) if warmup_steps is None else warmup_steps
        return cls(model, dist, accelerator, device, steps=steps, warmup_steps=warmup, **settings)

    def to_device(self, inputs: dict) -> dict:
        """``inputs`` on the model's device; floating ones in the model's dtype. Copies from pinned
        memory (``Prefetcher``) do not wait for the device: the step's kernels queue behind them."""
        dtype = next(self.model.parameters()).dtype
        return {k: v.to(self.device, dtype=dtype if v.is_floating_point() else None, non_blocking=True)
                for k, v in inputs.items()}

    def start(self, chosen: Any, target: str, key: str, train_data: HealData, held_out: HealData) -> None:
        import torch

        self.chosen, self.target, self.key, self.train_data, self.held_out = chosen, target, key, train_data, held_out
        self.trained = chosen.parameters(self.model)
        self.optimizer = adamw(self.trained, lr=self.lr, weight_decay=self.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._factor)
        wrap = self.dist.world > 1
        self.student = self.accelerator.prepare_model(self.model, device_placement=False) if wrap else self.model

    def _factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 0 at the last step."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)))

    # ------------------------------------------------------------------------------ checkpoints
    def fingerprint(self, chosen: Any, train_examples: int, held_out_examples: int) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it."""
        from ..conversion import conversion_report

        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
                "warmup_steps": self.warmup_steps, "seed": self.seed, "trainable": chosen.kind,
                "trained_weights": chosen.names, "target": self.target, "train_examples": train_examples,
                "held_out_examples": held_out_examples, "max_length": self.train_data.max_length,
                "conversion": conversion_report(self.model).settings.to_dict(), "num_processes": self.dist.world}

    def restore(self, state: dict) -> None:
        import torch

        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["weights"].items():
                named[name].copy_(value)
        # The saved groups carry the saving run's kernel choice (fused on a GPU): this run's stays.
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, chosen in zip(self.optimizer.param_groups, kernels):
            group.update(chosen)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = self.resumed_from = state["step"]
        self.before, self.history = state["before"], state["history"]
        self.previous_elapsed_s = state["elapsed_s"]

    def save(self, fingerprint: dict) -> Path | None:
        self.log.flush(self)
        if self.checkpoint_dir is None or not self.dist.main:
            return None
        named = dict(self.model.named_parameters())
        weights = {n: named[n].detach().cpu().clone() for n in self.chosen.names}
        return checkpoints.save(self.checkpoint_dir, {
            "fingerprint": fingerprint, "step": self.step, "weights": weights,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "before": self.before, "history": self.history, "elapsed_s": self.elapsed_s,
        })

    @property
    def elapsed_s(self) -> float:
        return self.previous_elapsed_s + time.perf_counter() - self.session_start

    def interrupted(self, exc: BaseException, fingerprint: dict) -> BaseException:
        """Save a checkpoint of the last completed step (unless the interruption split a weight
        update); ``exc`` with what was saved added to its message."""
        if self.checkpoint_dir is None:
            outcome = f"healing stopped after step {self.step} of {self.steps}; no checkpoint (no checkpoint folder)"
        elif self.updating:
            outcome = f"healing stopped during a weight update; the last checkpoint in {self.checkpoint_dir} is kept"
        else:
            self.save(fingerprint)
            outcome = (f"healing checkpoint of step {self.step} of {self.steps} saved in {self.checkpoint_dir} "
                       "(run again to resume)")
        if isinstance(exc, Interrupted):
            exc.doing, exc.outcome = exc.doing or "healing", exc.outcome or outcome
            return exc
        return KeyboardInterrupt(outcome)


def train(run: Run, teacher: Any, fingerprint: dict) -> None:
    """Steps ``run.step`` to ``run.steps``, with a progress bar of the loss and the fidelity
    (refreshed at most once a second: each refresh reads them from the device, see ``StepLog``)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=run.steps, initial=run.step, desc="healing", unit="step", leave=False,
               disable=not (run.progress and run.dist.main))
    shown = time.monotonic()
    try:
        with Prefetcher(run) as batches:
            while run.step < run.steps:
                run.log.add(run, *_one_step(run, teacher, batches.get(run.step)))
                bar.update(1)
                if not bar.disable and time.monotonic() - shown >= 1.0:
                    bar.set_postfix(run.log.latest(run), refresh=False)
                    shown = time.monotonic()
                if run.checkpoint_every and run.step % run.checkpoint_every == 0:
                    run.save(fingerprint)
                stop_point(f"heal:{run.step}")
    finally:
        bar.close()
    run.save(fingerprint)


class StepLog:
    """Each step's loss and fidelity, kept on the device until they are read. Reading a device
    value makes the host wait for the device: a loop that read them every step could not queue
    the next step's kernels while the device runs this one's. They are read together, in one
    wait, when the progress bar is refreshed, before a checkpoint is saved and at the end (and
    every ``LIMIT`` steps, to bound what is held); the smoothed fidelity and ``run.history`` are
    then computed step by step in the same order, so their numbers are those a reading after
    each step would give."""

    LIMIT = 1024

    def __init__(self) -> None:
        self.pending: list[tuple[int, Any, Any, int]] = []  # (step, loss, fidelity sum, count), on the device
        self.smoothed: float | None = None  # exponential moving average of the fidelity (0.9 / 0.1)
        self.loss: float | None = None  # the latest step's, read

    def add(self, run: Run, loss: Any, fidelity: tuple[Any, int]) -> None:
        """Step ``run.step`` (just taken) ended with ``loss`` and ``fidelity`` = (sum, count)."""
        self.pending.append((run.step, loss, *fidelity))
        if len(self.pending) >= self.LIMIT:
            self.flush(run)

    def flush(self, run: Run) -> None:
        """Read the pending steps; record every ``run.steps // 50``-th step and the last in ``run.history``."""
        if not self.pending:
            return
        import torch

        read = torch.stack([v.float() for _, loss, total, _ in self.pending for v in (loss, total)]).tolist()
        record_every = max(1, run.steps // 50)
        for i, (step, _, _, count) in enumerate(self.pending):
            self.loss, value = read[2 * i], read[2 * i + 1] / max(count, 1)
            self.smoothed = value if self.smoothed is None else 0.9 * self.smoothed + 0.1 * value
            if step % record_every == 0 or step == run.steps:
                run.history.append({"step": step, "loss": self.loss, run.key: self.smoothed})
        self.pending.clear()

    def latest(self, run: Run) -> dict[str, str]:
        """The progress bar's numbers, read now."""
        self.flush(run)
        return {"loss": f"{self.loss:.4g}", run.key: f"{self.smoothed:.4f}"}


def adamw(params: list, lr: float, weight_decay: float) -> Any:
    """AdamW, fused (one kernel launch for every weight, where the default launches a few per
    group of tensors: host time saved every step) when every weight is a floating tensor on a
    CUDA device, which the fused kernel requires."""
    import torch

    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def batch_ids(run: Run, step: int) -> list[int]:
    """This process's share of the examples of step ``step``."""
    return step_indices(len(run.train_data), step, run.batch_size, run.seed)[run.dist.rank :: run.dist.world]


class Prefetcher:
    """Each step's inputs (CPU tensors), the next step's prepared on a worker thread while this one
    runs. Turning a batch into inputs is host work the device would otherwise wait for: tokenising
    one text of 4,096 words took 10 ms on the H200's host, a fifth of a BERT-base healing step there
    (docs/benchmarks-log.md). The order of the data depends on the step alone (``step_indices``), so
    the inputs of step ``s`` are the same whether they were prepared ahead or not."""

    def __init__(self, run: Run):
        self.run = run
        self.pool: Any = None
        self.ahead: tuple[int, Any] | None = None  # (step, future of its inputs)

    def __enter__(self) -> Prefetcher:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="heal-data")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def get(self, step: int) -> dict:
        ahead, self.ahead = self.ahead, None
        inputs = ahead[1].result() if ahead is not None and ahead[0] == step else self._inputs(step)
        if step + 1 < self.run.steps:
            self.ahead = (step + 1, self.pool.submit(self._inputs, step + 1))
        return inputs

    def _inputs(self, step: int) -> dict:
        return self._pinned(self._batch(step))

    def _batch(self, step: int) -> dict:
        """Step ``step``'s inputs as the data's processor makes them (tokenised text, images)."""
        return self.run.train_data.inputs(batch_ids(self.run, step))

    def _pinned(self, inputs: dict) -> dict:
        """On a GPU pinned, so that the copy to the device does not wait (``Run.to_device``)."""
        if self.run.device.type == "cuda":
            inputs = {k: v.pin_memory() for k, v in inputs.items()}
        return inputs


def _one_step(run: Run, teacher: Any, batch: dict) -> tuple[Any, tuple[Any, int]]:
    """One optimizer step on ``batch``, this process's share of the step's examples as CPU
    tensors (``Prefetcher.get``); (loss, (fidelity sum, count)) of it, the loss and the sum as
    device tensors (``StepLog`` reads them): nothing here waits for the device, except the
    selection of the real tokens of a batch with padding (counting them is a read)."""
    import torch

    cpu_mask = batch.get("attention_mask")
    padded = cpu_mask is not None and not bool(cpu_mask.all())  # asked of the CPU copy: no wait
    inputs = run.to_device(batch)
    mask = inputs.get("attention_mask")
    reference = teacher(inputs)
    output = run.student(**inputs)
    # Without padding, every token is a row: the same rows as the mask selects, taken without a read.
    loss = objective.loss(run.target, output, reference, mask if padded else None)
    run.accelerator.backward(loss)
    torch.nn.utils.clip_grad_norm_(run.trained, 1.0)
    with held():  # Ctrl-C and SIGTERM wait for the update to finish, so that a checkpoint is consistent
        run.updating = True
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        run.updating = False
    fidelity = objective.fidelity_tensors(run.target, output, reference, mask, padded=padded)[run.key]
    return loss.detach(), fidelity


def held_out_fidelity(run: Run, teacher: Any, desc: str) -> dict[str, float | None]:
    """The fidelity of the model to its original on the held-out examples (this process's share
    of the batches, summed over every process)."""
    import torch

    from ..evaluation.progress import progress_bar
    from ..evaluation.tasks.base import chunks

    sums: dict[str, list[float]] = {}
    batches = run.dist.shard(chunks(range(len(run.held_out)), run.batch_size))
    for ids in progress_bar(batches, desc, run.progress and run.dist.main):
        inputs = run.to_device(run.held_out.inputs(ids))
        with torch.no_grad():
            output = run.model(**inputs)
        add_sums(sums, objective.fidelity_sums(run.target, output, teacher(inputs), inputs.get("attention_mask")))
    return mean_of_sums(run.dist.gather([sums]))
