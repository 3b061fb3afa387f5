"""Where each real token sits in the block layout of its own sequence.

MonarchAttention treats every sequence by its own length (like FlashAttention's variable-length
mode): the real tokens of sequence ``b`` (those with ``key_padding_mask[b] == True``, in order) are
laid out in ``m_b = ceil(L_b / block_size)`` blocks, padded at the end (``post``) or at the front
(``pre``) up to ``m_b * block_size``. Blocks past ``m_b`` hold nothing. Because a sequence's layout
depends on nothing but its own length, its outputs do not depend on how much padding the batch
adds, or where.

Shared by the PyTorch reference and the Triton launcher so that both place tokens identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SequenceLayout:
    """Per-batch description of the block layout.

    token_mask:  (B, N) bool, True at real tokens.
    lengths:     (B,) int64, real tokens per sequence.
    token_index: (B, N) int64, ``token_index[b, r]`` is the position in the input of sequence b's
                 r-th real token (entries at ``r >= lengths[b]`` are 0 and unused).
    offsets:     (B,) int64, position of the first real token in the padded layout (0 for
                 ``post``, ``m_b * block_size - L_b`` for ``pre``).
    num_blocks:  ``ceil(N / b)`` with b the block size as ``capped_block_size`` caps it: enough
                 blocks for any sequence of the batch, known on the host without a device sync (a
                 sequence simply leaves its trailing blocks empty).
    """

    token_mask: torch.Tensor
    lengths: torch.Tensor
    token_index: torch.Tensor
    offsets: torch.Tensor
    num_blocks: int

    def slot_sources(self, n_pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, valid), each (B, N'): slot p of sequence s holds its real token of rank
        ``p - offsets[s]``, the input position ``source[s, p]``, where ``valid[s, p]``."""
        rank = torch.arange(n_pad, device=self.offsets.device)[None, :] - self.offsets[:, None]
        valid = (rank >= 0) & (rank < self.lengths[:, None])
        return self.token_index.gather(1, rank.clamp(0, self.token_mask.shape[1] - 1)), valid

    def token_slots(self, n_pad: int) -> torch.Tensor:
        """(B, N): the slot of each input token, ``offsets + (its rank among real tokens)``
        (padding tokens get a slot in range, whose output is then zeroed)."""
        return (self.offsets[:, None] + self.token_mask.cumsum(dim=1) - 1).clamp(0, n_pad - 1)


def capped_block_size(block_size: int, seq_len: int) -> int:
    """The block size a call on ``seq_len`` tokens runs with: ``block_size``, but at most the
    sequence length. A block at least as long as the sequence is one block (``m = 1``), which is
    exact softmax attention (docs/algorithm.md, section 2): a longer one would only pad it, so that
    ``block_size=2**40`` on 10 tokens would allocate 2**40 slots. Every backend and the FLOPs
    report use this, so a larger block never costs more than ``b = N``. (``torch.sym_min``: no
    guard on the length under ``torch.compile``; plain ints in, a plain int out.)"""
    return torch.sym_max(1, torch.sym_min(block_size, seq_len))


def sequence_layout(
    key_padding_mask: torch.Tensor | None,
    batch: int,
    seq_len: int,
    block_size: int,
    pad_type: str,
    device: torch.device,
) -> SequenceLayout:
    block_size = capped_block_size(block_size, seq_len)
    if key_padding_mask is None:
        mask = torch.ones((batch, seq_len), dtype=torch.bool, device=device)
    else:
        mask = key_padding_mask.to(device=device, dtype=torch.bool)
    lengths = mask.sum(dim=1)
    # A stable sort of "is padding" puts the real tokens first, in their original order.
    token_index = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    token_index = token_index.masked_fill(torch.arange(seq_len, device=device) >= lengths[:, None], 0)
    blocks = (lengths + block_size - 1) // block_size
    if pad_type == "pre":
        offsets = blocks * block_size - lengths
    else:
        offsets = torch.zeros_like(lengths)
    num_blocks = max(1, -(-seq_len // block_size))
    return SequenceLayout(mask, lengths, token_index, offsets, num_blocks)


def output_like(q: torch.Tensor, dv: int) -> torch.Tensor:
    """Uninitialised output (B, H, N, dv) laid out like q: when q is the (B, N, H, d) -> (B, H, N, d)
    transposed view that transformers passes, so is the output (its transpose back is free)."""
    B, H, N, _ = q.shape
    if q.stride(1) < q.stride(2):
        return torch.empty((B, N, H, dv), dtype=q.dtype, device=q.device).transpose(1, 2)
    return torch.empty((B, H, N, dv), dtype=q.dtype, device=q.device)
