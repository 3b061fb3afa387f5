"""One pass of the model over the evaluated batches: this process's share of them, each forward
pass timed on its own, the predictions and output-fidelity sums gathered from every process."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Sequence

from .distributed import Distributed
from .fidelity import LayerFidelity, add_sums, mean_of_sums
from .progress import progress_bar
from .tasks import Batch, Options, Task
from .timing import median, synchronize


@dataclass
class PassResult:
    """What one pass found."""

    outputs: dict[int, dict]  # this process's outputs by batch index (the converted runs' reference)
    predictions: list  # every example's, in sample order
    fidelity: dict[str, float | None]  # output fidelity against the reference, if one was given
    wall_time_s: float  # the slowest process's time in forward passes
    median_batch_s: float | None


class Runner:
    """Runs the model, as it is converted or not, over batches of the evaluated sample."""

    def __init__(self, task: Task, model: Any, opts: Options, dist: Distributed, columns: dict[str, str],
                 processor: Any, progress: bool):
        self.task, self.model, self.opts, self.dist = task, model, opts, dist
        self.columns, self.processor, self.progress = columns, processor, progress
        self.current_mask = None  # the running batch's attention mask (LayerFidelity reads it)

    def run(self, batches: Sequence[Batch], desc: str, reference: dict | None = None,
            layers: LayerFidelity | None = None, warmup: bool = True) -> PassResult:
        """One pass over ``batches`` (after one untimed batch if ``warmup``). With ``reference``
        (the original's :attr:`PassResult.outputs`): each batch's output fidelity against it. With
        ``layers`` active: the per-layer fidelity, its extra softmax runs left out of the times."""
        import torch

        mine = self.dist.shard(batches)
        with torch.no_grad():
            if warmup and mine:
                self.task.forward(self.model, mine[0], self._inputs(mine[0]), self.opts)
            with layers if layers is not None else nullcontext():
                try:
                    outputs, preds, sums, times = self._each_batch(mine, desc, reference, layers)
                finally:
                    self.current_mask = None
        predictions = _ordered(self.dist.gather(preds), sum(len(b.example_ids) for b in batches))
        fidelity = mean_of_sums(self.dist.gather([sums]))
        wall_time = max(self.dist.gather([sum(times)]))
        return PassResult(outputs, predictions, fidelity, wall_time, median(self.dist.gather(times)))

    def predict(self, ds: Any, desc: str) -> list:
        """The model's predictions on every example of ``ds``, in order (no warm-up)."""
        batches = self.task.make_batches(ds, self.columns, self.processor, self.model, self.opts)
        return self.run(batches, desc, warmup=False).predictions

    def _each_batch(self, mine: list[Batch], desc: str, reference: dict | None, layers: LayerFidelity | None):
        """(outputs by batch index, (example_id, prediction) pairs, output-fidelity sums, times)."""
        outputs: dict[int, dict] = {}
        preds: list[tuple[int, Any]] = []
        sums: dict[str, list[float]] = {}
        times: list[float] = []
        for batch in progress_bar(mine, desc, self.progress and self.dist.main):
            inputs = self._inputs(batch)
            self.current_mask = inputs.get("attention_mask")
            out, took = self._timed_forward(batch, inputs, layers)
            outputs[batch.index] = out
            times.append(took)
            preds.extend(zip(batch.example_ids, self.task.predictions(batch, out, self.opts)))
            if reference is not None:
                with layers.pause() if layers is not None else nullcontext():
                    part = self.task.output_fidelity(batch, inputs, reference[batch.index], out, self.model, self.opts)
                add_sums(sums, part)
        return outputs, preds, sums, times

    def _timed_forward(self, batch: Batch, inputs: dict, layers: LayerFidelity | None) -> tuple[dict, float]:
        import torch

        device = torch.device(self.opts.device)
        overhead = layers.overhead_s if layers is not None else 0.0
        synchronize(device)
        start = time.perf_counter()
        out = self.task.forward(self.model, batch, inputs, self.opts)
        synchronize(device)
        took = time.perf_counter() - start
        if layers is not None:
            took -= layers.overhead_s - overhead
        return out, took

    def _inputs(self, batch: Batch) -> dict:
        """The batch's inputs on the device; floating ones in the model's dtype."""
        import torch

        out = {}
        for k, v in batch.build().items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.opts.device)
                if self.opts.dtype is not None and v.is_floating_point():
                    v = v.to(self.opts.dtype)
            out[k] = v
        return out


def _ordered(preds: list[tuple[int, Any]], n: int) -> list:
    """The ``(example_id, prediction)`` pairs of every process as a list indexed by example."""
    out: list = [None] * n
    for i, p in preds:
        out[i] = p
    return out
