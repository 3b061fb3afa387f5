"""The settings calibration chooses from, per layer, and their allocation under a FLOPs budget.

Each layer gets one :class:`Candidate` (softmax, or b, T and the variants). The search is cheap
on purpose: per-layer errors measured once on the original model's hidden states
(``passes.candidate_stats``), then a Lagrangian sweep (each layer picks ``argmin error +
lam * FLOPs`` for a range of ``lam``) gives the allocations on the lower convex hull of total
error against total FLOPs, each filled up greedily to the budget. Per-layer errors add up to an
optimistic estimate of the whole model's, so a few of the best allocations are then validated
end to end on held-out data (``run.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..config import LayerSetting
from ..flops import monarch_attention_flops, softmax_attention_flops
from ..patches.dispatch import MonarchSpec


@dataclass(frozen=True)
class Candidate:
    """One layer's setting; ``block_size=None``: the layer stays on softmax."""

    block_size: int | None = None
    num_steps: int = 1
    exact_diagonal: bool = False
    global_keys: int = 0

    @property
    def is_softmax(self) -> bool:
        return self.block_size is None

    def label(self) -> str:
        if self.is_softmax:
            return "softmax"
        return (f"b={self.block_size} T={self.num_steps}" + (" diag" if self.exact_diagonal else "")
                + (f" G={self.global_keys}" if self.global_keys else ""))

    def setting(self) -> LayerSetting:
        return LayerSetting(self.block_size, self.num_steps, self.exact_diagonal, self.global_keys)

    def spec(self, pad_type: str, backend: str, name: str) -> MonarchSpec:
        return MonarchSpec(self.block_size, self.num_steps, pad_type, backend, name, self.exact_diagonal,
                           self.global_keys)

    def flops(self, seq_len: int, head_dim: int, num_heads: int) -> int:
        if self.is_softmax:
            return softmax_attention_flops(seq_len, head_dim, num_heads)
        return monarch_attention_flops(seq_len, head_dim, self.block_size, self.num_steps, num_heads,
                                       exact_diagonal=self.exact_diagonal, global_keys=self.global_keys)


def default_candidates(seq_len: int) -> list[Candidate]:
    """Block sizes about 0.7, 1 and 1.4 x sqrt(N) (16, 23, 32 at N = 512), T = 1, or T = 2 with
    exact diagonal blocks (at T = 1 they are the published algorithm; at T = 2 they cost little
    more and measured better), with no, a few or twice as many global keys (G about sqrt(N) / 3
    or 2 sqrt(N) / 3: 8 or 16 at N = 512; each 8 keys cost about 1.6% of softmax's FLOPs there);
    then softmax itself. T = 3 never beat T = 2 in the measurements of issue 14."""
    root = math.sqrt(seq_len)
    sizes = sorted({b for b in (max(2, round(root * f)) for f in (0.7, 1.0, 1.4)) if b < seq_len})
    keys = max(1, round(root / 3))
    out = []
    for b in sizes:
        for steps, diag in ((1, False), (2, True)):
            out += [Candidate(b, steps, diag, g) for g in sorted({0, keys, min(2 * keys, 128)})]
    return out + [Candidate()]


@dataclass(frozen=True)
class Option:
    """A candidate of one layer: its estimated error (squared, relative) and FLOPs."""

    candidate: Candidate
    error: float
    flops: int


Allocation = tuple[int, ...]  # per layer, the index of its chosen option


def _total(options: Sequence[Sequence[Option]], allocation: Allocation, what: str) -> float:
    return sum(getattr(options[i][j], what) for i, j in enumerate(allocation))


def hull(options: Sequence[Sequence[Option]]) -> list[Allocation]:
    """Distinct allocations of the Lagrangian sweep, from the cheapest to the most accurate."""
    scale = max(max(o.flops for o in layer) for layer in options)
    found: dict[Allocation, None] = {}
    for lam in [math.inf] + [10 ** (3 - i / 40) for i in range(321)] + [0.0]:
        def cost(o: Option) -> tuple[float, float]:
            # math.inf: the cheapest; ties go to the smaller error (and the other way at lam = 0).
            return (o.flops, o.error) if lam == math.inf else (o.error + lam * o.flops / scale, o.flops)

        found[tuple(min(range(len(layer)), key=lambda j: cost(layer[j])) for layer in options)] = None
    return sorted(found, key=lambda a: _total(options, a, "flops"))


def fill(options: Sequence[Sequence[Option]], allocation: Allocation, budget: float) -> Allocation:
    """``allocation`` improved one layer at a time (the largest error reduction that still fits
    the budget) until nothing fits."""
    current = list(allocation)
    while True:
        spent, best = _total(options, tuple(current), "flops"), None
        for i, layer in enumerate(options):
            for j, o in enumerate(layer):
                gain, fits = layer[current[i]].error - o.error, spent - layer[current[i]].flops + o.flops <= budget
                if gain > 0 and fits and (best is None or gain > best[0]):
                    best = (gain, i, j)
        if best is None:
            return tuple(current)
        current[best[1]] = best[2]


def converts_something(options: Sequence[Sequence[Option]], allocation: Allocation) -> bool:
    return any(not options[i][j].candidate.is_softmax for i, j in enumerate(allocation))


def best_under(options: Sequence[Sequence[Option]], budget: float, count: int) -> list[Allocation]:
    """Up to ``count`` distinct allocations within ``budget`` FLOPs with the smallest estimated
    error (each hull point under the budget, filled up to it)."""
    points = [a for a in hull(options) if _total(options, a, "flops") <= budget]
    filled = {fill(options, a, budget): None for a in points}
    ranked = sorted((a for a in filled if converts_something(options, a)), key=lambda a: _total(options, a, "error"))
    return ranked[:count]


def frontier(options: Sequence[Sequence[Option]]) -> list[Allocation]:
    """The hull's allocations that convert something, from the cheapest to the most accurate."""
    return [a for a in hull(options) if converts_something(options, a)]


def total_flops(options: Sequence[Sequence[Option]], allocation: Allocation) -> float:
    return _total(options, allocation, "flops")
