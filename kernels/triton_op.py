"""The Triton path as ``torch.library`` custom ops, so that ``torch.compile`` and CUDA graphs see
a single opaque call (no graph break) with a fake (meta) implementation for tracing.

``monarch_attention_fwd`` is the forward; its autograd formula (``register_autograd``) saves q, k,
v and the mask and calls ``monarch_attention_bwd``, the backward kernels (docs/algorithm.md,
section 9), itself a custom op: a compiled training step traces both as single calls. A compiled
call that needs grad takes ``monarch_attention_fwd_saving`` instead: the same launches, and a second
output, what the backward reads in place of its recomputation (at T = 1; 0 bytes elsewhere), saved
with the inputs. Eager calls that need grad take ``triton_function.py``'s autograd Function instead
(the same launchers, without the ops' dispatch).
"""

from __future__ import annotations

from importlib import import_module
from typing import Optional

import torch

from .layout import output_like

OP_NAME = "monarch_convert::monarch_attention_fwd"
SAVING_OP_NAME = "monarch_convert::monarch_attention_fwd_saving"
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
    # A new output (``output_like``), made by the launcher: one it allocates may hold aL first
    # (``LaunchPlan.al_home``), which a caller's output never does.
    return impl.monarch_attention_triton(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale,
                                         exact_diagonal=exact_diagonal, global_keys=global_keys)


@monarch_attention_fwd.register_fake
def _(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale, exact_diagonal=False, global_keys=0):
    return output_like(q, v.shape[-1])


@torch.library.custom_op(SAVING_OP_NAME, mutates_args=())
def monarch_attention_fwd_saving(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor],
    block_size: int,
    num_steps: int,
    pad_type: str,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, what the backward reads: ``launch.monarch_attention_triton_saving``'s scratch,
    ``launch.saved_bytes`` long; empty where the backward recomputes). The options off."""
    impl = import_module(__package__ + ".triton.launch")
    out, saved = impl.monarch_attention_triton_saving(q, k, v, key_padding_mask, block_size, num_steps, pad_type,
                                                      scale, out=output_like(q, v.shape[-1]))
    return out, torch.empty(0, dtype=torch.uint8, device=q.device) if saved is None else saved


@monarch_attention_fwd_saving.register_fake
def _(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale):
    impl = import_module(__package__ + ".triton.launch")
    nbytes = impl.saved_bytes(q, v, block_size, num_steps, key_padding_mask is not None)
    return output_like(q, v.shape[-1]), torch.empty(nbytes, dtype=torch.uint8, device=q.device)


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
    saved: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``saved``: the training forward's second output (empty or None: recompute)."""
    impl = import_module(__package__ + ".triton.backward_launch")
    return impl.monarch_attention_backward(q, k, v, key_padding_mask, grad_out, block_size, num_steps, pad_type, scale,
                                           exact_diagonal=exact_diagonal, global_keys=global_keys,
                                           saved=saved if saved is not None and saved.numel() else None)


@monarch_attention_bwd.register_fake
def _(q, k, v, key_padding_mask, grad_out, block_size, num_steps, pad_type, scale, exact_diagonal=False,
      global_keys=0, saved=None):
    # The gradients are new contiguous tensors (the launcher's float32 accumulators, cast).
    return tuple(torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, key_padding_mask, *options = inputs
    # O(N d) per head: the inputs and the mask, and the training op's kept intermediates (its
    # second output); the backward recomputes what is not kept.
    saved = output[1] if isinstance(output, (tuple, list)) else None
    ctx.save_for_backward(q, k, v, key_padding_mask, saved)
    ctx.options = options  # block_size, num_steps, pad_type, scale (fwd op: exact_diagonal, global_keys)


def _backward(ctx, grad_out, *_):  # the training op's second output (bytes) has no gradient
    q, k, v, key_padding_mask, saved = ctx.saved_tensors
    options = (*ctx.options, False, 0)[:6]  # the training op has the options off
    dq, dk, dv = monarch_attention_bwd(q, k, v, key_padding_mask, grad_out, *options, saved)
    return dq, dk, dv, *(None,) * (len(ctx.options) + 1)


monarch_attention_fwd.register_autograd(_backward, setup_context=_setup_context)
monarch_attention_fwd_saving.register_autograd(_backward, setup_context=_setup_context)
