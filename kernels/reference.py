"""PyTorch reference of MonarchAttention: any device, any float dtype, autograd.

Notation follows ``docs/algorithm.md``. Everything is computed in float32 (logits and
softmax statistics must be float32 whatever the input dtype; float64 inputs, which only direct
calls such as gradient checks pass, stay float64) and cast back at the end. Every product is a
batched matmul, so ``torch.utils.flop_counter`` sees exactly the cost of section 3 (section 7 for
the two options, exact diagonal blocks and global keys, ``variants.py``).

Tensors in the block layout, per (batch, head):
    x_blk[k, i]   = x[k*b + i]            (m, b, d)   "by block"
    x_off[j, l]   = x[l*b + j]            (b, m, d)   "by offset" (a transpose of the above)
    R[k, j, i]    = R_k[j, i]             (m, b, b)
    L[j, l, k]    = L_j[k, l]             (b, m, m)   row (j, l) is one query's distribution over blocks
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .layout import SequenceLayout, capped_block_size
from .variants import compute_dtype, global_slot_flags, masked_logsumexp, select_global_keys


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last dim restricted to ``mask``; returns (p, log p) with both exactly 0
    outside the mask and for rows with nothing valid (no NaN, no Inf, NaN-free gradients)."""
    x = logits.masked_fill(~mask, float("-inf"))
    # A row with nothing valid gets finite logits here and is zeroed below.
    x = torch.where(mask.any(dim=-1, keepdim=True), x, 0.0)
    # The row max comes off first (exactly, in float32, near the max), then the log-sum-exp of what
    # is left. ``x - logsumexp(x)`` rounds log(sum) away when the logits are large: at 8e8 float32's
    # spacing is 64, so tied logits (q = k = a constant vector of 1e4) all got log p = 0, p = 1, and
    # a row summed to its count (the output left the convex hull of v). Softmax is shift-invariant:
    # the max needs no gradient.
    x = x - x.amax(dim=-1, keepdim=True).detach()
    logp = torch.where(mask, x - torch.logsumexp(x, dim=-1, keepdim=True), 0.0)
    return torch.where(mask, logp.exp(), 0.0), logp


def _to_layout(x: torch.Tensor, source: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B, H, N', d): slot p holds token ``source[b, p]`` or zeros."""
    B, H, _, d = x.shape
    placed = x.gather(2, source[:, None, :, None].expand(B, H, source.shape[1], d))
    return placed.masked_fill(~valid[:, None, :, None], 0.0)


@dataclass(frozen=True)
class _Extra:
    """Columns of the L-softmax beyond the m blocks (docs/algorithm.md, section 7), by offset:
    diag_lse (B, H, b, m): the exact log-sum-exp of each query's own block, with diag_y its value
    D_l[j] @ v_l (exact diagonal blocks); glob_logits (B, H, b, m, G), glob_mask (B, H, 1, 1, G) and
    glob_v (B, H, 1, G, dv): the global keys."""

    diag_lse: Optional[torch.Tensor] = None
    diag_y: Optional[torch.Tensor] = None
    glob_logits: Optional[torch.Tensor] = None
    glob_mask: Optional[torch.Tensor] = None
    glob_v: Optional[torch.Tensor] = None


def monarch_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: SequenceLayout,
    block_size: int,
    num_steps: int,
    scale: float,
    exact_diagonal: bool = False,
    global_keys: int = 0,
) -> torch.Tensor:
    B, H, N, d = q.shape
    dv = v.shape[-1]
    if v.numel() == 0:
        # No token (or no batch, head or value feature): an empty output, as SDPA returns. It still
        # depends on q and k, so that autograd gives all three their (empty) gradients.
        return v + 0 * (q.sum() + k.sum())
    # As the layout: b >= N is one block (exact softmax), never a padded longer one.
    b, m = capped_block_size(block_size, N), layout.num_blocks
    n_pad = m * b

    source, valid = layout.slot_sources(n_pad)  # (B, N')
    q_blk, k_blk, v_blk = (
        _to_layout(x.to(compute_dtype(x)), source, valid).view(B, H, m, b, x.shape[-1]) for x in (q, k, v)
    )
    valid_blk = valid.view(B, 1, m, b)
    key_valid = valid_blk[:, :, :, None, :]  # (B, 1, m, 1, b): keys i of block k
    query_valid_off = valid_blk.transpose(2, 3)[..., None]  # (B, 1, b, m, 1): query (j, l)
    q_off = q_blk.transpose(2, 3)  # (B, H, b, m, d)
    extra = _Extra()
    if global_keys > 0:  # they leave their blocks: R sees them as padding (per head: (B, H, m, 1, b))
        flags, extra = _global_keys(q, k, v, q_off, layout, source, valid, global_keys, scale)
        key_valid = key_valid & ~flags.view(B, H, m, 1, b)
    block_valid = key_valid.any(dim=-1).squeeze(-1)[:, :, None, None, :]  # (B, 1|H, 1, 1, m): blocks k

    L = None
    for _ in range(num_steps):
        # R-step. With L = identity (first step) the block summary of query (k, j) is q itself.
        summary = q_blk if L is None else block_summary(L, q_off, query_valid_off)
        logits = scale * (summary @ k_blk.transpose(-1, -2))
        R, log_r = _masked_softmax(logits, key_valid)
        if exact_diagonal and L is None:
            # The first R-step is each query's exact softmax over its own block: kept for good.
            extra = _with_diagonal(extra, logits, key_valid, R, v_blk, num_steps)

        # L-step: each query (j, l) chooses among blocks k through their summaries.
        a_l = (scale * (R @ k_blk)).transpose(2, 3)  # (B, H, b, m_k, d)
        c_l = (R * log_r).sum(dim=-1).transpose(2, 3)  # (B, H, b, m_k); 0 log 0 = 0
        L, w_diag, w_glob = _l_softmax(q_off @ a_l.transpose(-1, -2) - c_l[..., None, :], block_valid, extra)

    y = (R @ v_blk).transpose(2, 3)  # (B, H, b, m_k, dv)
    z = _output(L, y, w_diag, w_glob, extra).transpose(2, 3).reshape(B, H, n_pad, dv)

    # Back to the input's positions.
    out = z.gather(2, layout.token_slots(n_pad)[:, None, :, None].expand(B, H, N, dv))
    return out.masked_fill(~layout.token_mask[:, None, :, None], 0.0).to(q.dtype)


def block_summary(L: torch.Tensor, q_off: torch.Tensor, query_valid_off: Optional[torch.Tensor]) -> torch.Tensor:
    """The R-step's row vectors aR / cR for a fixed L (docs/algorithm.md, section 2), by block
    (``query_valid_off`` None: no padding query; ``torch_inference.py`` shares it)."""
    # Padding queries put no weight anywhere: they must not shape any block's summary.
    weights = L if query_valid_off is None else L * query_valid_off  # (B, H, b, m_l, m_k)
    a_r = weights.transpose(-1, -2) @ q_off  # (B, H, b, m_k, d)
    c_r = weights.sum(dim=-2)  # (B, H, b, m_k)
    # c_r = 0: no real query looks at block k through offset j; a_r is 0 too and the row
    # becomes uniform over the block's keys (the maximum-entropy choice).
    return (a_r / torch.where(c_r > 0, c_r, 1.0)[..., None]).transpose(2, 3)


def _global_keys(q, k, v, q_off, layout, source, valid, count: int, scale: float):
    """(slot flags (B, H, N'), the global columns): docs/algorithm.md, section 7."""
    positions, real = select_global_keys(q, k, layout.token_mask, count)
    B, H, G = positions.shape
    k_g, v_g = (x.to(q_off.dtype).gather(2, positions[..., None].expand(B, H, G, x.shape[-1])) for x in (k, v))
    logits = scale * (q_off @ k_g.transpose(-1, -2)[:, :, None])  # (B, H, b, m, G): N' G d
    flags = global_slot_flags(positions, real, source, valid, q.shape[2])
    return flags, _Extra(glob_logits=logits, glob_mask=real[:, :, None, None, :], glob_v=v_g[:, :, None])


def _with_diagonal(extra: _Extra, logits, key_valid, R, v_blk, num_steps: int) -> _Extra:
    """``extra`` plus the exact diagonal blocks from the first R-step's ``logits`` and ``R``; their
    value ``D @ v`` is the output's ``R @ v`` itself at T = 1 (no extra cost)."""
    lse = masked_logsumexp(logits, key_valid).transpose(2, 3)  # (B, H, b, m)
    diag_y = None if num_steps == 1 else (R @ v_blk).transpose(2, 3)  # N' b d from T = 2 on
    return replace(extra, diag_lse=lse, diag_y=diag_y)


def _l_softmax(logits: torch.Tensor, block_valid: torch.Tensor, extra: _Extra):
    """The L-softmax of every query over its m blocks and its extra columns: (L over the blocks,
    weight of the exact diagonal block or None, weights of the global keys or None). With exact
    diagonal blocks, a query's own block column carries no weight (its exact column replaces it),
    so the summaries built from L fit each block only from the other blocks' queries."""
    if extra.diag_lse is None and extra.glob_logits is None:
        L, _ = _masked_softmax(logits, block_valid)
        return L, None, None
    m = logits.shape[-1]
    cols, masks = [logits], [block_valid]
    if extra.diag_lse is not None:
        own = torch.eye(m, dtype=torch.bool, device=logits.device)  # (m_l, m_k)
        masks[0] = block_valid & ~own
        cols.append(extra.diag_lse[..., None])
        masks.append(block_valid.transpose(-1, -2))  # query (j, l): its own block has a key
    if extra.glob_logits is not None:
        cols.append(extra.glob_logits)
        masks.append(extra.glob_mask)
    shape = logits.shape[:-1]
    p, _ = _masked_softmax(torch.cat([c.expand(*shape, c.shape[-1]) for c in cols], dim=-1),
                           torch.cat([x.expand(*shape, x.shape[-1]) for x in masks], dim=-1))
    has_diag = extra.diag_lse is not None
    return p[..., :m], p[..., m] if has_diag else None, p[..., m + has_diag:] if extra.glob_logits is not None else None


def _output(L, y, w_diag, w_glob, extra: _Extra) -> torch.Tensor:
    """Z by offset (B, H, b, m, dv): the blocks' L @ Y plus the extra columns' weighted values."""
    z = L @ y
    if w_diag is not None:
        z = z + w_diag[..., None] * (y if extra.diag_y is None else extra.diag_y)
    if w_glob is not None:
        z = z + w_glob @ extra.glob_v  # N' G dv
    return z
