"""PyTorch reference of MonarchAttention: any device, any float dtype, autograd.

Notation follows ``docs/algorithm.md``. Everything is computed in float32 (logits and
softmax statistics must be float32 whatever the input dtype; float64 inputs, which only tests pass,
in float64) and cast back at the end. Every
product is a batched matmul, so ``torch.utils.flop_counter`` sees exactly the cost of section 3.

Tensors in the block layout, per (batch, head):
    x_blk[k, i]   = x[k*b + i]            (m, b, d)   "by block"
    x_off[j, l]   = x[l*b + j]            (b, m, d)   "by offset" (a transpose of the above)
    R[k, j, i]    = R_k[j, i]             (m, b, b)
    L[j, l, k]    = L_j[k, l]             (b, m, m)   row (j, l) is one query's distribution over blocks
"""

from __future__ import annotations

import torch

from .layout import SequenceLayout, capped_block_size


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


def monarch_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: SequenceLayout,
    block_size: int,
    num_steps: int,
    scale: float,
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
    dev = q.device

    # Slot p of sequence s holds its real token of rank p - offsets[s], if there is one.
    rank = torch.arange(n_pad, device=dev)[None, :] - layout.offsets[:, None]
    valid = (rank >= 0) & (rank < layout.lengths[:, None])  # (B, N')
    source = layout.token_index.gather(1, rank.clamp(0, N - 1))
    work = torch.promote_types(q.dtype, torch.float32)  # float64 (the tests' gradcheck) stays float64
    q_blk, k_blk, v_blk = (_to_layout(x.to(work), source, valid).view(B, H, m, b, x.shape[-1]) for x in (q, k, v))
    valid_blk = valid.view(B, 1, m, b)
    key_valid = valid_blk[:, :, :, None, :]  # (B, 1, m, 1, b): keys i of block k
    query_valid_off = valid_blk.transpose(2, 3)[..., None]  # (B, 1, b, m, 1): query (j, l)
    block_valid = valid_blk.any(dim=-1)[:, :, None, None, :]  # (B, 1, 1, 1, m): blocks k
    q_off = q_blk.transpose(2, 3)  # (B, H, b, m, d)

    L = None
    for _ in range(num_steps):
        # R-step. With L = identity (first step) the block summary of query (k, j) is q itself.
        if L is None:
            summary = q_blk
        else:
            # Padding queries put no weight anywhere: they must not shape any block's summary.
            weights = L * query_valid_off  # (B, H, b, m_l, m_k)
            a_r = weights.transpose(-1, -2) @ q_off  # (B, H, b, m_k, d)
            c_r = weights.sum(dim=-2)  # (B, H, b, m_k)
            # c_r = 0: no real query looks at block k through offset j; a_r is 0 too and the row
            # becomes uniform over the block's keys (the maximum-entropy choice).
            summary = (a_r / torch.where(c_r > 0, c_r, 1.0)[..., None]).transpose(2, 3)
        R, log_r = _masked_softmax(scale * (summary @ k_blk.transpose(-1, -2)), key_valid)

        # L-step: each query (j, l) chooses among blocks k through their summaries.
        a_l = (scale * (R @ k_blk)).transpose(2, 3)  # (B, H, b, m_k, d)
        c_l = (R * log_r).sum(dim=-1).transpose(2, 3)  # (B, H, b, m_k); 0 log 0 = 0
        L, _ = _masked_softmax(q_off @ a_l.transpose(-1, -2) - c_l[..., None, :], block_valid)

    y = (R @ v_blk).transpose(2, 3)  # (B, H, b, m_k, dv)
    z = (L @ y).transpose(2, 3).reshape(B, H, n_pad, dv)

    # Back to the input's positions: token n sits at slot offset + (its rank among real tokens).
    slot = layout.offsets[:, None] + layout.token_mask.cumsum(dim=1) - 1
    out = z.gather(2, slot.clamp(0, n_pad - 1)[:, None, :, None].expand(B, H, N, dv))
    return out.masked_fill(~layout.token_mask[:, None, :, None], 0.0).to(q.dtype)
