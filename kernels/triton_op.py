"""The Triton path as ``torch.library`` custom ops, so that ``torch.compile`` and CUDA graphs see
a single opaque call (no graph break) with a fake (meta) implementation for tracing.

``monarch_attention_fwd`` is the forward; its autograd formula (``register_autograd``) saves q, k,
v and the mask and calls ``monarch_attention_bwd``, the backward kernels (docs/algorithm.md,
section 9), itself a custom op: a compiled training step traces both as single calls. Eager
calls that need grad take ``triton_function.py``'s autograd Function instead (the same launchers,
without the ops' dispatch).
"""

from __future__ import annotations

from importlib import import_module
from typing import Optional

import torch

from .layout import output_like

OP_NAME = "monarch_convert::monarch_attention_fwd"
BWD_OP_NAME = "monarch_convert::monarch_attention_bwd"


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


@torch.library.custom_op(BWD_OP_NAME, mutates_args=())
def monarch_attention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor],
    grad_out: torch.Tensor,
    block_size: int,
    num_steps: int,
    pad_type: str,
    scale: float,
    exact_diagonal: bool = False,
    global_keys: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    impl = import_module(__package__ + ".triton.backward_launch")
    return impl.monarch_attention_backward(q, k, v, key_padding_mask, grad_out, block_size, num_steps, pad_type, scale,
                                           exact_diagonal=exact_diagonal, global_keys=global_keys)


@monarch_attention_bwd.register_fake
def _(q, k, v, key_padding_mask, grad_out, block_size, num_steps, pad_type, scale, exact_diagonal=False,
      global_keys=0):
    # The gradients are new contiguous tensors (the launcher's float32 accumulators, cast).
    return tuple(torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, key_padding_mask, *options = inputs
    # O(N d) per head: the inputs and the mask only; the backward recomputes every step.
    ctx.save_for_backward(q, k, v, key_padding_mask)
    ctx.options = options  # block_size, num_steps, pad_type, scale, exact_diagonal, global_keys


def _backward(ctx, grad_out):
    q, k, v, key_padding_mask = ctx.saved_tensors
    dq, dk, dv = monarch_attention_bwd(q, k, v, key_padding_mask, grad_out, *ctx.options)
    return dq, dk, dv, *(None,) * (len(ctx.options) + 1)


monarch_attention_fwd.register_autograd(_backward, setup_context=_setup_context)
