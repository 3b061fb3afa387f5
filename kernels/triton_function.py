"""The Triton path's eager autograd: a ``torch.autograd.Function`` whose forward and backward go
straight to the launchers, each of which replays its recorded launches at a signature seen before
(``kernels/triton/replay.py``, ``kernels/triton/backward_launch.py``).

The custom ops of ``triton_op.py`` call the same launchers (the same kernels, the same results, bit
for bit) and are what ``torch.compile`` traces. In eager mode their dispatch, their autograd
wrapper and the second op of the backward cost host time on every training step that this path
does not pay. Like the training custom op, it saves q, k, v, the mask and, at T = 1, the forward's
intermediates that the backward reads in place of recomputing them (docs/algorithm.md, section 9),
and its backward is not itself differentiable.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class MonarchAttentionFunction(torch.autograd.Function):
    """``apply(q, k, v, mask, key, launch_module, block_size, num_steps, pad_type, scale)``: the
    output of ``launch_module.monarch_attention_triton``; ``key``: the call's key (``ops._replayed``;
    None: no replay looked up or kept), its replay in ``launch_module.REPLAYS`` under
    ``launch_module.saving_key(key)``."""

    @staticmethod
    def forward(ctx, q, k, v, mask, key, launch_module, block_size: int, num_steps: int, pad_type: str,
                scale: float) -> torch.Tensor:
        # Kept apart from an inference call's replay at the same key (``launch.saving_key``).
        replay = None if key is None else launch_module.REPLAYS.get(launch_module.saving_key(key))
        if replay is not None:
            out, saved = replay.run_keeping(q, k, v, mask)
        else:
            out, saved = launch_module.monarch_attention_triton_saving(q, k, v, mask, block_size, num_steps, pad_type,
                                                                       scale, remember_as=key)
        ctx.save_for_backward(q, k, v, mask, saved)
        ctx.options = (block_size, num_steps, pad_type, scale)
        ctx.key = key
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        from .triton import backward_launch

        q, k, v, mask, saved = ctx.saved_tensors
        # The forward's key holds the backward's signature but for the output gradient's layout
        # and whether the forward kept its intermediates (q, k, v and the mask are 16-byte aligned
        # where there is a key: ``ops._replayed``; the kept scratch is an allocator block).
        key = ctx.key and (ctx.key, grad_out.stride(), grad_out.dtype, grad_out.data_ptr() % 16 == 0,
                           saved is not None)
        replay = key and backward_launch.REPLAYS.get(key)
        if replay:
            dq, dk, dv = replay.run(q, k, v, mask, grad_out, saved)
        else:
            dq, dk, dv = backward_launch.monarch_attention_backward(q, k, v, mask, grad_out, *ctx.options,
                                                                    remember_as=key, saved=saved)
        return dq, dk, dv, None, None, None, None, None, None, None
