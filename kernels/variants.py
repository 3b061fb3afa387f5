"""The two options of the op beyond the published algorithm, as the PyTorch reference computes them
(docs/algorithm.md, section 7): exact diagonal blocks and global keys.

Both add columns to each query's L-softmax, next to its ``m`` block columns:

* exact diagonal: the query's own block is one column whose logit is the exact log-sum-exp of its
  scores against the block's keys and whose value is the exact within-block softmax applied to v
  (``D_l[j] @ v_l``). Its block column of the R-fit is masked out, so later R-steps fit each block
  only from the queries of other blocks.
* global keys: ``G`` columns per (sequence, head), one per global key, logit ``scale * q . k_g``,
  value ``v_g``. The global keys leave their blocks: R treats them as padding.

Only torch; the Triton kernels compute the same quantities in their own programs.
"""

from __future__ import annotations

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision and float32 inputs (docs/algorithm.md, section 4); float64 stays
    float64 (gradient checks of the reference)."""
    return torch.promote_types(x.dtype, torch.float32)


def select_global_keys(q: torch.Tensor, k: torch.Tensor, token_mask: torch.Tensor,
                       count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global keys of each (sequence, head): input positions ``(B, H, G)`` and whether each is a
    real key ``(B, H, G)``, with ``G = min(count, N)``.

    Score ``s_i = (sum over the real queries j of q_j) . k_i``: the mean query's score times the
    number of real queries, so the same ranking. Candidates are the real keys; the top G win, ties
    going to the earlier position (a stable sort). Padding changes neither the sum (padding queries
    weigh 0) nor the order of real keys, so a sequence's choice does not depend on its batch; the
    sums are float64, so that rounding, which can depend on the padded length, cannot reorder two
    keys unless their scores agree to about 1e-15. A sequence with at most G real tokens gets all
    of them (the remaining columns are padding keys, marked not real)."""
    n = q.shape[2]
    g = min(count, n)
    weight = token_mask.to(torch.float64)[:, None, None, :]  # (B, 1, 1, N)
    q_sum = weight @ q.to(torch.float64)  # (B, H, 1, d): N d multiply-adds
    score = (k.to(torch.float64) @ q_sum.transpose(-1, -2)).squeeze(-1)  # (B, H, N): N d more
    score = score.masked_fill(~token_mask[:, None, :], float("-inf")).detach()
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :g]
    real = token_mask[:, None, :].expand(score.shape).gather(-1, order)
    return order, real


def global_slot_flags(positions: torch.Tensor, real: torch.Tensor, source: torch.Tensor,
                      valid: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B, H, N') True at the layout slots that hold a global key (``source``, ``valid``: (B, N'),
    the input position of the token each slot holds and whether it holds one)."""
    B, H, _ = positions.shape
    on_token = torch.zeros((B, H, seq_len), dtype=torch.bool, device=positions.device).scatter(-1, positions, real)
    return on_token.gather(-1, source[:, None, :].expand(B, H, -1)) & valid[:, None, :]


def masked_logsumexp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp over the last dim restricted to ``mask``; 0 for rows with nothing valid (finite
    everywhere, NaN-free gradients). The row max comes off first, as in ``_masked_softmax``."""
    any_valid = mask.any(dim=-1)
    x = torch.where(any_valid[..., None], logits.masked_fill(~mask, float("-inf")), 0.0)
    top = x.amax(dim=-1, keepdim=True).detach()
    return torch.where(any_valid, (x - top).logsumexp(dim=-1) + top.squeeze(-1), 0.0)
