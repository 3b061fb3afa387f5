"""The PyTorch inference path (``torch_inference.py``) as a ``torch.library`` custom op, for calls
traced by ``torch.compile`` on the CPU: one opaque call in the graph, run eagerly.

Traced, the path itself would break the graph where it reads the mask's lengths on the host, and
its loop over chunks would be unrolled: Inductor took 97-133 s to compile one call at batch 8,
N = 512. The reference, which compiled calls ran until now, traces whole but ran slower compiled
than the path eager (2 CPU cores, float32, B = 1, N = 4096, 12 heads, T = 1: 86 against 55 ms).
CPU only: on CUDA the path's host sync could not be captured in a CUDA graph (compiled calls with
``backend="torch"`` on CUDA keep the reference). Not for ``torch.export``, whose graphs keep the
reference's aten ops: an exported model needs no custom op from this package to run.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import torch_inference

OP_NAME = "monarch_convert::monarch_attention_cpu_inference"


@torch.library.custom_op(OP_NAME, mutates_args=(), device_types="cpu")
def monarch_attention_cpu_inference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor],
    block_size: int,
    num_steps: int,
    pad_type: str,
    scale: float,
) -> torch.Tensor:
    return torch_inference.from_mask(q, k, v, key_padding_mask, block_size, num_steps, scale, pad_type)


@monarch_attention_cpu_inference.register_fake
def _(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale):
    B, H, N, _ = q.shape  # the path's layout: a transposed view of a contiguous (B, N, H, dv)
    return torch.empty((B, N, H, v.shape[-1]), dtype=q.dtype, device=q.device).transpose(1, 2)
