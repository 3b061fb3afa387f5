"""Key-padding masks of every kind the kernel tests use, shared by the forward and backward tests."""

from __future__ import annotations

import torch


def key_padding_mask(kind, B, N, gen, short_last: bool = False):
    """``kind``: None, "random", "right", "left" or "empty_row" (one sequence with no real token).
    Lengths are random, the first sequence full; ``short_last``: the last one 3 tokens long
    (shorter than a block: a sequence of one block)."""
    if kind is None:
        return None
    if kind == "random":
        m = torch.rand(B, N, generator=gen) > 0.35
        m[0, 0] = True
        return m
    lengths = torch.randint(1, N + 1, (B,), generator=gen)
    lengths[0] = N
    if short_last:
        lengths[-1] = 3
    pos = torch.arange(N)
    if kind == "right":
        return pos[None, :] < lengths[:, None]
    if kind == "left":
        return pos[None, :] >= (N - lengths)[:, None]
    if kind == "empty_row":
        m = pos[None, :] < lengths[:, None]
        m[-1] = False
        return m
    raise ValueError(kind)
