"""The Triton path as one ``torch.library`` custom op, so that ``torch.compile`` and CUDA graphs see
a single opaque call (no graph break) with a fake (meta) implementation for tracing.

The op is forward only: ``ops.monarch_attention`` sends inputs that require grad to the PyTorch
reference instead (with a one-time warning), so gradients are never silently wrong.
"""

from __future__ import annotations

from importlib import import_module
from typing import Optional

import torch

from .layout import output_like

OP_NAME = "monarch_convert::monarch_attention_fwd"


@torch.library.custom_op(OP_NAME, mutates_args=())
def monarch_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor],
    block_size: int,
    num_steps: int,
    pad_type: str,
    scale: float,
    exact_diagonal: bool = False,
    global_keys: int = 0,
) -> torch.Tensor:
    # Looked up at call time, so that a test may reload the kernel module (e.g. to switch the
    # Triton interpreter on) without re-registering this op.
    impl = import_module(__package__ + ".triton.launch")
    out = output_like(q, v.shape[-1])
    return impl.monarch_attention_triton(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale, out=out,
                                         exact_diagonal=exact_diagonal, global_keys=global_keys)


@monarch_attention_fwd.register_fake
def _(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale, exact_diagonal=False, global_keys=0):
    return output_like(q, v.shape[-1])
