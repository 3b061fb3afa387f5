"""MonarchAttention for inference in PyTorch: the reference's arithmetic with fewer passes over
memory and fewer allocations.

The reference (``reference.py``) is the spec: it places every token with an element-wise
``gather``, masks with ``where`` so that autograd stays NaN-free, and allocates a new tensor for
every step of its softmaxes. Off CUDA it is what runs a converted model, and there most of its time
went to those passes, not to its matrix products (2 CPU cores, B = 1, N = 4096, T = 1: 35 of 241 ms
in ``bmm``). This path computes the same quantities (docs/algorithm.md, sections 2 and 4) for
calls that need no gradient and use neither option of section 7, with

- no placement where a sequence's slots are its input positions (no mask, or right padding with
  ``post``: a zero pad where ``b`` does not divide N), and whole rows copied by ``index_select``
  elsewhere;
- padding keys and blocks with no real key excluded by adding a large negative number (finite,
  so that ``0 log 0`` needs no ``where``: their weights underflow to exactly 0), only where the
  call has any;
- a few sequences and heads at a time, each chunk on the blocks its longest sequence fills (a
  padded sequence costs what its real tokens do);
- the softmax scale folded into q, and both softmaxes computed in place;
- the output written in the (batch, seq, heads, dim) layout that transformers' attention modules
  return, so that their transpose back costs nothing.

Blocks with no real key (past a short sequence's end) get finite, unused statistics here where the
reference has zeros: no real query weighs them, so every real token's output is the reference's up
to rounding (``tests/test_torch_inference.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import SequenceLayout, capped_block_size, sequence_layout
from .reference import block_summary
from .variants import compute_dtype

# Added to the logits of padding keys and empty blocks: far below the logits of any float16 input
# (|s q.k| < 1e11 at d = 64) or of float32 inputs up to ~1e13, and twice it is still finite in
# float32. (Logits near 1e30 would let padding in: the reference, with ``where``, has no such limit.)
EXCLUDED = -1e30


# Chunks of (sequence, head) pairs whose largest intermediate holds at most this many elements
# (1 MiB of float32): a whole call's intermediates were fresh memory, paged in on first touch, and
# too large for the caches. 2 CPU cores, float32, T = 1, 12 heads, d = 64, medians of 6 (ms),
# budgets 2^17 / 2^18 / 2^19 / 2^20 / unchunked: B = 1, N = 1024: 12.0 / 10.9 / 17.8 / 19.9 / 19.8;
# N = 4096: 74 / 60 / 79 / 117 / 122; B = 64, N = 256: 210 / 170 / 185 / 188 / 444; right-padded
# B = 8, N = 512: 104 / 80 / 75 / 82 / 124; B = 32, N = 128: 76 / 63 / 46 / 61 / 100.
CHUNK_ELEMENTS = 1 << 18


def monarch_attention_inference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: SequenceLayout | None,
    block_size: int,
    num_steps: int,
    scale: float,
    pad_type: str,
) -> torch.Tensor:
    """``reference.monarch_attention_torch`` without the options, for inputs that need no gradient.
    ``layout``: the key-padding layout, or None where there is no mask. Returns (B, H, N, dv), a
    transposed view of a contiguous (B, N, H, dv) tensor."""
    B, H, N, d = q.shape
    dv = v.shape[-1]
    b = capped_block_size(block_size, N)
    m = -(-N // b)
    in_place = layout is None or (pad_type == "post" and _right_padded(layout))
    out = torch.empty((B, N, H, dv), dtype=q.dtype, device=q.device)
    pairs = max(1, CHUNK_ELEMENTS // (m * b * max(b, m, d, dv)))  # (sequence, head) pairs per chunk
    seqs, heads = (max(1, pairs // H), H) if pairs >= H else (1, pairs)
    # A sequence fills its first ceil(L / b) blocks only (kernels/layout.py): each chunk runs on the
    # blocks of its longest sequence, so that a padded sequence costs what its real tokens do (the
    # lengths read on the host: a device sync, as ``_right_padded``'s; the caller is not compiled).
    lengths = None if layout is None else layout.lengths.tolist()
    for s in range(0, B, seqs):
        m_c = m if lengths is None else -(-max(lengths[s:s + seqs]) // b)
        if m_c == 0:  # no real token: every row is padding, zeroed below
            continue
        # Right padding in place: the chunk's real tokens are among its first m_c * b positions.
        n = min(N, m_c * b) if in_place else N
        part = None if layout is None else _sequences(layout, slice(s, s + seqs), n)
        for h in range(0, H, heads):
            at = (slice(s, s + seqs), slice(h, h + heads), slice(0, n))
            out[at[0], :n, at[1]] = _chunk(q[at], k[at], v[at], part, b, m_c, num_steps, scale, pad_type, in_place)
    if layout is not None:  # the rows of padding tokens, once for the whole call
        out.masked_fill_(~layout.token_mask[:, :, None, None], 0.0)
    return out.transpose(1, 2)


def from_mask(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
              block_size: int, num_steps: int, scale: float, pad_type: str) -> torch.Tensor:
    """``monarch_attention_inference`` on the key-padding mask itself (None: no mask), as the op's
    entry point and its CPU custom op (``torch_inference_op.py``) take it."""
    layout = None if key_padding_mask is None else sequence_layout(key_padding_mask, q.shape[0], q.shape[2],
                                                                   block_size, pad_type, q.device)
    return monarch_attention_inference(q, k, v, layout, block_size, num_steps, scale, pad_type)


def _sequences(layout: SequenceLayout, seqs: slice, n: int) -> SequenceLayout:
    """The layout of sequences ``seqs``, their first ``n`` tokens (all where placed by index)."""
    return SequenceLayout(layout.token_mask[seqs, :n], layout.lengths[seqs], layout.token_index[seqs],
                          layout.offsets[seqs], layout.num_blocks)


def _chunk(q, k, v, layout: SequenceLayout | None, b: int, m: int, num_steps: int, scale: float, pad_type: str,
           in_place: bool) -> torch.Tensor:
    """The output of some sequences and heads, (B, N, H, dv) in the compute dtype, padding rows not
    yet zeroed (``in_place``: slot p holds token p)."""
    B, H, N, _ = q.shape
    dv = v.shape[-1]
    n_pad = m * b
    dtype = compute_dtype(q)
    if in_place:
        valid = _slots_in_place(layout, N, n_pad, pad_type, q.device)
        token_valid = None if layout is None else layout.token_mask
        qs, k, v = (_padded(x, dtype, n_pad, pad_type, token_valid) for x in (q, k, v))
    else:
        source, valid = layout.slot_sources(n_pad)  # (B, N')
        qs, k, v = (_placed(x, dtype, source, valid) for x in (q, k, v))
    qs *= scale

    q_blk, k_blk, v_blk = (x.view(B, H, m, b, x.shape[-1]) for x in (qs, k, v))
    q_off = q_blk.transpose(2, 3).contiguous()  # (B, H, b, m, d): query (j, l), for every L-step
    key_bias = block_bias = query_valid_off = None
    if valid is not None:
        key_valid = valid.view(-1, 1, m, 1, b)  # (B | 1, 1, m, 1, b)
        key_bias = _bias(key_valid, dtype)
        block_bias = _bias(key_valid.any(dim=-1).view(-1, 1, 1, 1, m), dtype)
        query_valid_off = valid.view(-1, 1, m, b).transpose(2, 3)[..., None].to(dtype)  # (B | 1, 1, b, m, 1)

    L = None
    for _ in range(num_steps):
        # R-step. With L = identity (first step) the block summary of query (k, j) is q itself.
        summary = q_blk if L is None else block_summary(L, q_off, query_valid_off)
        R, c_l = _softmax_and_entropy(summary @ k_blk.transpose(-1, -2), key_bias)  # the scale is in q
        # L-step: each query (j, l) chooses among blocks k through their summaries.
        a_l = (R @ k_blk).transpose(2, 3)  # (B, H, b, m_k, d), without the scale (it is in q)
        logits = q_off @ a_l.transpose(-1, -2)  # (B, H, b, m_l, m_k)
        logits -= c_l.transpose(2, 3)[..., None, :]
        L = _softmax_(logits if block_bias is None else logits.add_(block_bias))

    z = L @ (R @ v_blk).transpose(2, 3)  # (B, H, b, m_l, dv): slot l * b + j
    if in_place:
        z = z.permute(0, 3, 2, 1, 4).reshape(B, n_pad, H, dv)  # (B, N', H, dv)
        out = z[:, :N] if pad_type == "post" else z[:, n_pad - N:]
    else:
        # Token n of sequence s sits at slot l b + j: row ((s H + h) b + j) m + l of z.
        slot = layout.token_slots(n_pad)
        s_h = torch.arange(B * H, device=q.device).view(B, 1, H)
        rows = (s_h * b + (slot % b)[:, :, None]) * m + (slot // b)[:, :, None]  # (B, N, H)
        out = z.reshape(-1, dv).index_select(0, rows.view(-1)).view(B, N, H, dv)
    return out


def _right_padded(layout: SequenceLayout) -> bool:
    """Whether every sequence's real tokens come first (a device sync: the caller is not compiled)."""
    n = layout.token_mask.shape[1]
    return torch.equal(layout.token_mask, torch.arange(n, device=layout.lengths.device) < layout.lengths[:, None])


def _slots_in_place(layout, N: int, n_pad: int, pad_type: str, device) -> torch.Tensor | None:
    """(B, N') whether each slot holds a real token, where slot p holds token p (shifted by the
    zero pad of ``pre``); None where every slot does."""
    if layout is not None:
        return F.pad(layout.token_mask, (0, n_pad - N))
    if n_pad == N:
        return None
    valid = torch.zeros(n_pad, dtype=torch.bool, device=device)
    valid[slice(0, N) if pad_type == "post" else slice(n_pad - N, n_pad)] = True
    return valid[None, :]


def _padded(x: torch.Tensor, dtype: torch.dtype, n_pad: int, pad_type: str, token_valid) -> torch.Tensor:
    """x in ``dtype``, a new tensor (B, H, N', d) with zeros in the pad and at the padding tokens
    (``token_valid`` (B, N) False; None: none). The pad alone is zeroed through a slice, not by a
    mask pass over the whole tensor: 9% less time at B = 64, N = 197, b = 14 (ViT-B/16) and 18% at
    B = 8, N = 512, both ``pre`` and unmasked (2 CPU cores, medians of 8 interleaved calls)."""
    N = x.shape[2]
    out = torch.empty((*x.shape[:2], n_pad, x.shape[-1]), dtype=dtype, device=x.device)
    tokens = slice(0, N) if pad_type == "post" else slice(n_pad - N, n_pad)
    out[:, :, tokens] = x
    (out[:, :, N:] if pad_type == "post" else out[:, :, :n_pad - N]).zero_()
    if token_valid is not None:
        out[:, :, tokens].masked_fill_(~token_valid[:, None, :, None], 0.0)
    return out


def _placed(x: torch.Tensor, dtype: torch.dtype, source: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B, H, N', d) in ``dtype``: slot p holds token ``source[s, p]`` or zeros;
    whole rows copied by ``index_select`` (``gather`` reads an index per element)."""
    B, H, N, d = x.shape
    if x.transpose(1, 2).is_contiguous():  # transformers' (B, N, H, d), transposed
        rows = (torch.arange(B, device=x.device)[:, None, None] * N + source[:, None, :]) * H + \
            torch.arange(H, device=x.device)[None, :, None]
        flat = x.transpose(1, 2).reshape(-1, d)
    else:
        rows = torch.arange(B * H, device=x.device).view(B, H, 1) * N + source[:, None, :]
        flat = x.contiguous().view(-1, d)
    placed = flat.index_select(0, rows.view(-1)).view(B, H, -1, d).to(dtype)
    return placed.masked_fill_(~valid[:, None, :, None], 0.0)


def _bias(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``valid``, EXCLUDED elsewhere, to add to logits."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill_(~valid, EXCLUDED)


def _softmax_(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, in place."""
    x -= x.amax(dim=-1, keepdim=True)
    x.exp_()
    return x.div_(x.sum(dim=-1, keepdim=True))


def _softmax_and_entropy(logits: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, sum R log R) of the R-step's ``logits`` (overwritten): with ``t = x - max`` and
    ``R = e^t / s``, ``log R = t - log s`` and ``sum R log R = sum R t - log s``."""
    if bias is not None:
        logits += bias
    t = logits.sub_(logits.amax(dim=-1, keepdim=True))
    R = t.exp()
    total = R.sum(dim=-1, keepdim=True)
    R /= total
    return R, t.mul_(R).sum(dim=-1) - total.log_().squeeze(-1)
