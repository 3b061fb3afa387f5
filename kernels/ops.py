"""The one functional entry point: ``monarch_attention``, in the style of
``torch.nn.functional.scaled_dot_product_attention``."""

from __future__ import annotations

import importlib.util
import os

import torch

from .layout import sequence_layout
from .options import BACKENDS, MAX_BLOCK_SIZE, PAD_TYPES
from .reference import monarch_attention_torch
from .torch_inference import from_mask as inference_from_mask

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_int(name: str, value: object, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{name} must be at most {most} (a block as long as the sequence is already exact "
                         f"softmax attention), got {value!r}")
    return value


def _validate(q, k, v, key_padding_mask, block_size, num_steps, pad_type, backend, exact_diagonal,
              global_keys) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a 4-D tensor (batch, heads, seq, head_dim), got {got}")
        if x.dtype not in _DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float32, got {x.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[:3] != k.shape[:3] or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            "q, k, v must agree in (batch, heads, seq) (self-attention), got "
            f"q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share head_dim, got q={q.shape[-1]}, k={k.shape[-1]}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            is_tensor = isinstance(key_padding_mask, torch.Tensor)
            got = key_padding_mask.dtype if is_tensor else type(key_padding_mask).__name__
            raise ValueError(f"key_padding_mask must be a bool tensor (True = real token), got {got}")
        if tuple(key_padding_mask.shape) != (q.shape[0], q.shape[2]):
            raise ValueError(
                f"key_padding_mask must have shape (batch, seq) = {(q.shape[0], q.shape[2])}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
    _check_int("block_size", block_size, MAX_BLOCK_SIZE)
    _check_int("num_steps", num_steps)
    if pad_type not in PAD_TYPES:
        raise ValueError(f"pad_type must be one of {PAD_TYPES}, got {pad_type!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(exact_diagonal, bool):
        raise ValueError(f"exact_diagonal must be True or False, got {exact_diagonal!r}")
    if isinstance(global_keys, bool) or not isinstance(global_keys, int) or global_keys < 0:
        raise ValueError(f"global_keys must be an integer >= 0, got {global_keys!r}")


def monarch_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    block_size: int,
    num_steps: int = 1,
    pad_type: str = "post",
    scale: float | None = None,
    backend: str = "auto",
    exact_diagonal: bool = False,
    global_keys: int = 0,
) -> torch.Tensor:
    """MonarchAttention of ``q, k, v`` (batch, heads, seq, head_dim); ``v`` may have its own head dim.

    key_padding_mask: (batch, seq) bool, True = real token. Each sequence is treated by its own
        length, so outputs at real tokens do not depend on padding; padding rows are zeros.
    block_size: Monarch block size b (``b = 1`` and ``b >= seq`` are exact softmax attention; a
        block longer than the sequence runs as ``b = seq``: it costs no more than that).
    num_steps: alternating (R, L) update pairs T.
    pad_type: ``"post"`` pads each sequence at its end up to a multiple of b, ``"pre"`` at its front.
    scale: softmax scale, ``head_dim ** -0.5`` by default.
    backend: ``"torch"`` (PyTorch), ``"triton"`` (CUDA kernels), or ``"auto"`` (Triton for CUDA
        tensors when triton is installed, PyTorch elsewhere). On PyTorch, eager inference without
        the options runs ``torch_inference.py`` (the reference's arithmetic in fewer passes), the
        rest the reference (``reference.py``). On Triton, inputs that need grad
        get the backward kernels (docs/algorithm.md, section 9): eager through an autograd Function
        (``triton_function.py``), under ``torch.compile`` through the custom op
        ``monarch_convert::monarch_attention_fwd`` (no graph break), the same launches.
    exact_diagonal: each query keeps the exact softmax over its own block at every step; later
        R-steps fit each block from the other blocks' queries (docs/algorithm.md, section 7).
    global_keys: G keys per (sequence, head), the top scores against its mean real query, leave
        their blocks and are attended exactly (section 7). 0 and False: the published algorithm.
        With either, inputs that need grad run on the reference (it has no backward kernels).

    Returns (batch, heads, seq, v_head_dim) in the input dtype (empty where seq, batch or heads is 0,
    as ``scaled_dot_product_attention`` returns).
    """
    key, out = _replayed(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale, backend, exact_diagonal,
                         global_keys)
    if out is not None:
        return out
    if key is not None and not (exact_diagonal or global_keys) and (
            key in _LAUNCH_MODULE.REPLAYS or _LAUNCH_MODULE.saving_key(key) in _LAUNCH_MODULE.REPLAYS):
        # Validated and run on Triton before (for inference, or for training: ``launch.saving_key``);
        # its replay did not run above: the inputs need grad.
        return _with_grad(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale, key)
    _validate(q, k, v, key_padding_mask, block_size, num_steps, pad_type, backend, exact_diagonal, global_keys)
    variant = (exact_diagonal, global_keys)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if block_size >= q.shape[2]:
        return _softmax_attention(q, k, v, key_padding_mask, float(scale))
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if uses_triton(q, backend) and not (needs_grad and (exact_diagonal or global_keys)):
        return _triton(q, k, v, key_padding_mask, block_size, num_steps, pad_type, float(scale), variant, key,
                       needs_grad)
    return _torch(q, k, v, key_padding_mask, block_size, num_steps, pad_type, float(scale), variant, needs_grad)


def _torch(q, k, v, mask, block_size: int, num_steps: int, pad_type: str, scale: float, variant: tuple,
           needs_grad: bool) -> torch.Tensor:
    """On PyTorch: inference without the options takes ``torch_inference.py`` (compiled on the CPU,
    as the custom op of ``torch_inference_op.py``; traced on CUDA, where its host sync could not be
    captured in a CUDA graph, and exported, whose graph must hold aten ops only, the reference); the
    rest, the reference."""
    fast = not (needs_grad or any(variant)) and q.numel() > 0 and v.numel() > 0
    if fast and torch.compiler.is_compiling():
        if q.device.type == "cpu" and not torch.compiler.is_exporting():
            from .torch_inference_op import monarch_attention_cpu_inference

            return monarch_attention_cpu_inference(q, k, v, mask, block_size, num_steps, pad_type, scale)
        fast = False
    if fast:
        return inference_from_mask(q, k, v, mask, block_size, num_steps, scale, pad_type)
    layout = sequence_layout(mask, q.shape[0], q.shape[2], block_size, pad_type, q.device)
    return monarch_attention_torch(q, k, v, layout, block_size, num_steps, scale, *variant)


def _triton(q, k, v, mask, block_size: int, num_steps: int, pad_type: str, scale: float, variant: tuple,
            key: tuple | None, needs_grad: bool) -> torch.Tensor:
    """The Triton kernels. Under ``torch.compile``: one opaque custom op, with its backward kernels,
    for dynamo/inductor and CUDA graphs (for inputs that need grad, the one that also returns what
    the backward reads: ``triton_op.monarch_attention_fwd_saving``). Eager, for inputs that need
    grad: an autograd Function over the same launchers (``triton_function.py``: no custom-op
    dispatch). Eager inference: straight to the launcher (the custom op's Python dispatch costs tens
    of µs). Eager calls keep their replay under ``key`` for the next call like them."""
    if torch.compiler.is_compiling():
        from .triton_op import monarch_attention_fwd, monarch_attention_fwd_saving

        if needs_grad:  # (the options off: ``monarch_attention`` runs them on the reference then)
            return monarch_attention_fwd_saving(q, k, v, mask, block_size, num_steps, pad_type, scale)[0]
        return monarch_attention_fwd(q, k, v, mask, block_size, num_steps, pad_type, scale, *variant)
    launcher = _launcher()
    if needs_grad:
        return _with_grad(q, k, v, mask, block_size, num_steps, pad_type, scale, key)
    return launcher(q, k, v, mask, block_size, num_steps, pad_type, scale, exact_diagonal=variant[0],
                    global_keys=variant[1], remember_as=key)


def _with_grad(q, k, v, mask, block_size: int, num_steps: int, pad_type: str, scale: float | None,
               key: tuple | None) -> torch.Tensor:
    """Eager Triton with inputs that need grad (options off): the autograd Function over the
    launchers (``triton_function.py``), which replays under ``key``."""
    from .triton_function import MonarchAttentionFunction

    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return MonarchAttentionFunction.apply(q, k, v, mask, key, _LAUNCH_MODULE, block_size, num_steps, pad_type, scale)


# Decided once, at import, without importing triton (the kernel module is imported on first use,
# so that TRITON_INTERPRET set by a test before that still takes effect). A constant for dynamo.
_TRITON_OK: bool = importlib.util.find_spec("triton") is not None


def _softmax_attention(q, k, v, key_padding_mask, scale: float) -> torch.Tensor:
    """One block holds the whole sequence: MonarchAttention is then exact softmax attention
    (docs/algorithm.md, section 2), so run softmax itself, at its cost, on every backend. Rows of
    padding tokens are zeros, as everywhere else (also for a sequence with no real token)."""
    attn_mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    if key_padding_mask is not None:
        out = out.masked_fill(~key_padding_mask[:, None, :, None], 0.0)
    return out


_LAUNCH_MODULE = None


def _replayed(q, k, v, mask, block_size, num_steps, pad_type, scale, backend, exact_diagonal, global_keys) -> tuple:
    """(key of the call, its output or None). The key holds everything ``_validate`` and the
    dispatch read: an eager call whose key a Triton call had before is valid, and runs that call's
    launches again on its own tensors (``kernels/triton/replay.py``) with no further Python work.
    With inputs that need grad, the key alone (the autograd Function replays under it). No key
    (None) where no replay may apply: before the first Triton call, under ``torch.compile``, with
    anything that is not a tensor where a tensor belongs, with pointers that are not 16-byte aligned
    (Triton compiles those apart)."""
    if _LAUNCH_MODULE is None or torch.compiler.is_compiling():
        return None, None
    tensors = isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
    if not tensors or (mask is not None and not isinstance(mask, torch.Tensor)):
        return None, None
    qp, kp, vp, mp = q.data_ptr(), k.data_ptr(), v.data_ptr(), 0 if mask is None else mask.data_ptr()
    if (qp | kp | vp | mp) & 15:
        return None, None
    # get_device: the CUDA index, -1 elsewhere; only validated CUDA calls are ever kept.
    masked = None if mask is None else (mask.shape, mask.stride(), mask.dtype, mask.get_device())
    key = (q.shape, k.shape, v.shape, q.stride(), k.stride(), v.stride(), q.dtype, k.dtype, v.dtype,
           q.get_device(), k.get_device(), v.get_device(), masked, type(block_size), block_size, type(num_steps),
           num_steps, pad_type, scale, backend, type(exact_diagonal), exact_diagonal, type(global_keys), global_keys)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return key, None
    replay = _LAUNCH_MODULE.REPLAYS.get(key)
    return key, None if replay is None else replay.run_at(qp, kp, vp, mp)


def _launcher():
    """The Triton launcher: its module is imported on first use (so that TRITON_INTERPRET set by a
    test before that still takes effect) and kept, not re-imported on every eager call; the
    function is looked up on it at each call (tests replace it)."""
    global _LAUNCH_MODULE
    if _LAUNCH_MODULE is None:
        from .triton import launch

        _LAUNCH_MODULE = launch
    return _LAUNCH_MODULE.monarch_attention_triton


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (the Triton backend's only requirement)."""
    return _TRITON_OK


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def uses_triton(q: torch.Tensor, backend: str) -> bool:
    """Whether ``backend`` runs the Triton kernels on tensors like ``q``; an error where it cannot
    (``"triton"`` needs CUDA tensors, or Triton's CPU interpreter, and the triton package)."""
    if backend == "torch":
        return False
    if backend == "auto":
        return q.is_cuda and triton_available()
    # backend == "triton": CUDA tensors, or any tensors under the Triton interpreter (CI).
    if not (q.is_cuda or _interpreting()):
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got {q.device}); use backend='auto' or 'torch', "
            "or set TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter"
        )
    if not triton_available():
        raise RuntimeError("backend='triton' needs the 'triton' package, which could not be imported")
    return True
