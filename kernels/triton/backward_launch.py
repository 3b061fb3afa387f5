"""The backward launcher: gradients of q, k, v from the output's gradient (docs/algorithm.md,
section 9), by recomputation from q, k, v and the key-padding mask alone.

First the forward is rebuilt step by step (``aK, cL`` of every step, the summaries and ``cR`` of
steps 2..T, ``Y`` of the last), then walked back: the output stage and the last R-step, then for
each earlier step its summary stage and its R-step. Gradients accumulate in float32 at the inputs'
positions (padding positions are never written: their gradient is zero) and are cast to the input
dtype at the end. No host sync; the scratch is ``O(T N d)`` per head, freed when the call returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..layout import capped_block_size
from .layout_kernel import _layout_kernel
from .plan import pow2

# A whole block (b keys) is one tile of an R-program up to 128 (N up to 16384 at b = sqrt(N)), and
# tiles of 128 beyond; an L-program's m blocks likewise.
MAX_TILE = 128


def tile(width: int, head_dim: int) -> tuple[int, int, int]:
    """(tile width, rows per chunk, warps) of a program whose tile spans ``width`` keys (R-programs:
    b) or blocks (L-programs: m) at head dim ``head_dim``. For sm_90 at head dim 64
    (``kernel_resources.py --backward``), the R-backward spilled registers with 32-row chunks at
    widths 64 and 128, and with 4 warps at widths 32 and 64; these choices spill nothing. (Compiled
    resources only: no timing behind them.)"""
    full = max(16, pow2(width))
    rows = 16 if full >= 64 else min(full, 32)
    return full, rows, 8 if full * max(16, pow2(head_dim)) >= 32 * 64 else 4


@dataclass
class _Bwd:
    """What every launch of one backward call reads."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    b: int
    m: int
    scale: float
    seq: tuple  # (lengths, offsets, token index) pointers, or q three times without a mask
    dims: tuple  # (H, N, b, m, seq_len, pad_off)
    has_mask: bool
    stats: tuple  # float32 (BH, m, b) per query: L's log-normaliser and sum_k L dL (only read with STATS)

    @property
    def bh(self) -> int:
        return self.q.shape[0] * self.q.shape[1]

    def flags(self) -> dict:
        D = self.q.shape[-1]
        return dict(D=D, HAS_MASK=self.has_mask, IEEE=self.q.dtype == torch.float32, BD=max(16, pow2(D)))

    def r_launch(self, name: str, *ptrs, **consts) -> None:
        """An R-program per (head, block): ``_r_fwd`` or ``_r_bwd``, over key tiles where a block is
        longer than ``MAX_TILE``."""
        wide = pow2(self.b) > MAX_TILE
        kernel = getattr(_kernels(wide), name + ("_wide_kernel" if wide else "_kernel"))
        BB, BQ, warps = tile(min(self.b, MAX_TILE), self.q.shape[-1])
        DV = self.v.shape[-1]
        kernel[(self.bh * self.m,)](
            *ptrs, *self.seq, *self.dims, *self.q.stride(), *self.k.stride(), *self.v.stride(), self.scale,
            DV=DV, BB=BB, BQ=BQ, BDV=max(16, pow2(DV)), **self.flags(), **consts, num_warps=warps)

    @property
    def l_tiles(self) -> int:
        """Tiles of blocks per offset: more than one where m is wider than ``MAX_TILE`` (STATS)."""
        return -(-self.m // MAX_TILE) if pow2(self.m) > MAX_TILE else 1

    def l_launch(self, kernel, *ptrs, strides=(), **consts) -> None:
        """An L-program per (head, offset, tile of blocks)."""
        BM, BQ, warps = tile(min(self.m, MAX_TILE), self.q.shape[-1])
        kernel[(self.bh * self.b * self.l_tiles,)](
            *ptrs, *self.seq, *self.dims, self.l_tiles, *self.q.stride(), *strides, self.scale, BM=BM, BQ=BQ,
            STATS=self.l_tiles > 1, **self.flags(), **consts, num_warps=warps)

    def l_stats(self, q, ak, cl, y, grad_out, d_sum, summ, c_r, **consts) -> None:
        """Where an offset's blocks span several tiles: each query's L log-normaliser (and
        ``sum_k L dL``) into ``stats``, one program per (head, offset)."""
        if self.l_tiles == 1:
            return
        BM, BQ, warps = tile(MAX_TILE, self.q.shape[-1])
        DV = self.v.shape[-1]
        _kernels()._l_stats_kernel[(self.bh * self.b,)](
            q, ak, cl, y, grad_out, d_sum, summ, c_r, *self.stats, *self.seq, *self.dims, 1, *self.q.stride(),
            *grad_out.stride(), self.scale, DV=DV, BDV=max(16, pow2(DV)), BM=BM, BQ=BQ, **self.flags(), **consts,
            num_warps=warps)


def _sequences(q: torch.Tensor, mask: Optional[torch.Tensor], b: int, m: int, pad_type: str):
    """(seq pointers, dims, has_mask): each sequence's length, offset and token index (the forward's
    ``_layout_kernel``), or one length for all without a mask."""
    B, H, N, _ = q.shape
    if mask is None:
        pad_off = m * b - N if pad_type == "pre" else 0
        return (q, q, q), (H, N, b, m, N, pad_off), False
    mask = mask.to(device=q.device).view(torch.uint8)
    tok = torch.empty((B, N), dtype=torch.int64, device=q.device)
    lens, offs = torch.empty((2, B), dtype=torch.int64, device=q.device)
    _layout_kernel[(B,)](mask, tok, lens, offs, *mask.stride(), N, b, PRE=pad_type == "pre",
                         CH=min(4096, max(16, pow2(N))), num_warps=4 if N <= 1024 else 8)
    return (lens, offs, tok), (H, N, b, m, N, 0), True


def _recompute(c: _Bwd, num_steps: int) -> list[dict]:
    """Each step's intermediates, rebuilt: ``src`` (the R-step's row vectors: q, or the summaries),
    ``ak``, ``cl``, ``y`` (written at the last step), and ``next_cr``, the next summaries' ``cR``."""
    D, dev = c.q.shape[-1], c.q.device
    rows = (c.bh, c.m, c.b)
    y = torch.empty(*rows, c.v.shape[-1], dtype=c.q.dtype, device=dev)
    steps, src = [], c.q
    for t in range(num_steps):
        last = t == num_steps - 1
        step = dict(src=src, ak=torch.empty(*rows, D, dtype=c.q.dtype, device=dev),
                    cl=torch.empty(rows, dtype=torch.float32, device=dev), y=y)
        c.r_launch("_r_fwd", src, c.k, c.v, step["ak"], step["cl"], y, FROM_SUMMARY=t > 0,
                   WANT_Y=last)
        steps.append(step)
        if not last:
            src = torch.empty(*rows, D, dtype=c.q.dtype, device=dev)
            step["next_cr"] = torch.empty(rows, dtype=torch.float32, device=dev)
            c.l_stats(c.q, step["ak"], step["cl"], y, c.q, y, y, step["cl"], WANT_DELTA=False, FINAL=False)
            c.l_launch(_kernels()._l_fwd_kernel, c.q, step["ak"], step["cl"], src, step["next_cr"], c.stats[0])
    return steps


def _walk_back(c: _Bwd, steps: list[dict], grad_out: torch.Tensor, acc: tuple) -> None:
    """The output stage, then each step from the last: its L-stage (output or summaries), then its
    R-step, whose row-vector gradient feeds the previous step's summary stage (or dq at step 1)."""
    dq, dk, dv = acc
    D, DV = c.q.shape[-1], c.v.shape[-1]
    rows = (c.bh, c.m, c.b)
    f32 = dict(dtype=torch.float32, device=c.q.device)
    dak, dcl, dy = torch.empty(*rows, D, **f32), torch.empty(rows, **f32), torch.empty(*rows, DV, **f32)
    d_sum = torch.empty(*rows, D, **f32) if len(steps) > 1 else dak  # (unused at T = 1)
    kern = _kernels()
    for t in range(len(steps) - 1, -1, -1):
        step, final = steps[t], t == len(steps) - 1
        # The next step's summaries and their cR (summary stage); unused by the output stage.
        summ, c_r = (dak, dcl) if final else (steps[t + 1]["src"], step["next_cr"])
        extras = (step["y"], grad_out, d_sum, summ, c_r)
        c.l_stats(c.q, step["ak"], step["cl"], *extras, WANT_DELTA=True, FINAL=final)
        c.l_launch(kern._l_bwd_kernel, c.q, step["ak"], step["cl"], *extras, *c.stats, dak, dcl, dy, dq,
                   strides=grad_out.stride(), FINAL=final, DV=DV, BDV=max(16, pow2(DV)))
        c.r_launch("_r_bwd", step["src"], c.k, c.v, dak, dcl, dy, d_sum, dq, dk, dv,
                   FROM_SUMMARY=t > 0, WANT_Y=final)


_KERNELS: dict = {}


def _kernels(wide: bool = False):
    """The kernel module (``backward``, or ``backward_wide`` for blocks longer than a tile),
    imported on first use (so that TRITON_INTERPRET set by a test before that still takes effect)."""
    if wide not in _KERNELS:
        from . import backward, backward_wide

        _KERNELS.update({False: backward, True: backward_wide})
    return _KERNELS[wide]


def monarch_attention_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
    grad_out: torch.Tensor, block_size: int, num_steps: int, pad_type: str, scale: float,
    exact_diagonal: bool = False, global_keys: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of ``monarch_attention_triton(q, k, v, ...)`` for the output gradient
    ``grad_out``, in the inputs' dtype; zero at padding positions. More blocks than ``MAX_TILE``
    per offset are split into tiles (STATS: each query's L statistics first, dq added atomically);
    blocks longer than ``MAX_TILE`` (b = sqrt(N) beyond N = 16384) are run over key tiles
    (``backward_wide.py``). The op's options (``exact_diagonal``, ``global_keys``: docs/algorithm.md,
    section 7) have no backward kernels (``ops.monarch_attention`` runs them on the reference)."""
    B, H, N, D = q.shape
    b = capped_block_size(block_size, N)
    m = max(1, -(-N // b))
    if B * H == 0 or N == 0:
        return tuple(torch.zeros(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))
    if exact_diagonal or global_keys:
        raise NotImplementedError("the op's options exact_diagonal and global_keys have no backward kernels: "
                                  "ops.monarch_attention runs inputs that need grad on the reference with them")
    seq, dims, has_mask = _sequences(q, key_padding_mask, b, m, pad_type)
    stats = tuple(torch.empty((B * H, m, b) if pow2(m) > MAX_TILE else 1, dtype=torch.float32, device=q.device)
                  for _ in range(2))
    c = _Bwd(q, k, v, b, m, float(scale), seq, dims, has_mask, stats)
    acc = tuple(torch.zeros(B, H, N, x.shape[-1], dtype=torch.float32, device=q.device) for x in (q, k, v))
    _walk_back(c, _recompute(c, num_steps), grad_out, acc)
    return tuple(a.to(x.dtype) for a, x in zip(acc, (q, k, v)))
