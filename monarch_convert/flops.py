"""Attention cost of softmax and MonarchAttention (section 3 of the MonarchAttention algorithm).

Per head, in multiply-accumulates (MACs), for a sequence of N tokens and head dim d, with
``m = ceil(N / b)`` blocks and ``N' = m * b``, where a block longer than the sequence counts as
``b = N`` (one block: the op runs it so, ``kernels/layout.py: capped_block_size``)::

    softmax:  2 * N**2 * d                        (q k^T, then A v)
    Monarch:  (2T + 1) * N' * b * d + 2T * N' * m * d
      + N' * b * d                 with exact diagonal blocks and T >= 2
      + 2 * N * d + 2 * N' * G * d with G = min(global_keys, N) global keys

(section 7 for the two options).

FLOPs are 2 x MACs. Only the attention products are counted (not the q/k/v/output projections,
which conversion leaves unchanged, nor the softmax exponentials).
"""

from __future__ import annotations


def _check(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def softmax_attention_macs(seq_len: int, head_dim: int, num_heads: int = 1) -> int:
    """MACs of softmax attention: ``2 N^2 d`` per head."""
    n, d, h = _check("seq_len", seq_len), _check("head_dim", head_dim), _check("num_heads", num_heads)
    return 2 * n * n * d * h


def monarch_attention_macs(
    seq_len: int, head_dim: int, block_size: int, num_steps: int = 1, num_heads: int = 1,
    *, exact_diagonal: bool = False, global_keys: int = 0,
) -> int:
    """MACs of MonarchAttention: ``(2T+1) N' b d + 2T N' m d`` per head, plus the options' costs
    (module docstring); softmax's for b >= N, where the op runs softmax itself, options or not."""
    n, d, h = _check("seq_len", seq_len), _check("head_dim", head_dim), _check("num_heads", num_heads)
    b, t = _check("block_size", block_size), _check("num_steps", num_steps)
    if isinstance(global_keys, bool) or not isinstance(global_keys, int) or global_keys < 0:
        raise ValueError(f"global_keys must be an integer >= 0, got {global_keys!r}")
    if b >= n:  # one block holds the sequence: the op runs exact softmax attention itself
        return softmax_attention_macs(n, d, h)
    m = -(-n // b)
    n_padded = m * b
    macs = (2 * t + 1) * n_padded * b * d + 2 * t * n_padded * m * d
    if exact_diagonal and t > 1:  # the exact within-block softmax applied to v, kept from step 1
        macs += n_padded * b * d
    if global_keys:  # choosing them (the mean query, its scores), then their logits and values
        macs += 2 * n * d + 2 * n_padded * min(global_keys, n) * d
    return macs * h


def softmax_attention_flops(seq_len: int, head_dim: int, num_heads: int = 1) -> int:
    """FLOPs (2 x MACs) of softmax attention."""
    return 2 * softmax_attention_macs(seq_len, head_dim, num_heads)


def monarch_attention_flops(
    seq_len: int, head_dim: int, block_size: int, num_steps: int = 1, num_heads: int = 1,
    *, exact_diagonal: bool = False, global_keys: int = 0,
) -> int:
    """FLOPs (2 x MACs) of MonarchAttention, with the op's options."""
    return 2 * monarch_attention_macs(seq_len, head_dim, block_size, num_steps, num_heads,
                                      exact_diagonal=exact_diagonal, global_keys=global_keys)


def format_flops(flops: object) -> str:
    """``9.66 GFLOP``-style text (three significant digits); ``-`` for a missing value."""
    if not isinstance(flops, (int, float)) or isinstance(flops, bool):
        return "-"
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if abs(flops) >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f} FLOP"
