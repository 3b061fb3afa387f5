"""The MonarchAttention op, PyTorch reference backend: exactness, batch invariance, numerics,
cost, autograd and argument checking (docs/algorithm.md, sections 2-4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from monarch_convert import monarch_attention

STEPS = (1, 2, 3)
PADS = ("post", "pre")


def qkv(batch=2, heads=3, seq=23, dim=16, dv=None, dtype=torch.float32, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k = (spread * torch.randn(batch, heads, seq, dim, generator=g) for _ in range(2))
    v = torch.randn(batch, heads, seq, dv or dim, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def ma(q, k, v, mask=None, **kw):
    kw.setdefault("backend", "torch")
    return monarch_attention(q, k, v, mask, **kw)


def dense_matrix(q, k, mask=None, **kw):
    """The attention matrix the op applies, read off by feeding v = identity."""
    b, h, n, _ = q.shape
    eye = torch.eye(n, dtype=q.dtype).expand(b, h, n, n)
    return ma(q, k, eye, mask, **kw)


def objective(a, q, k):
    """Row-wise s<A, q k^T> + H(A): what softmax maximises and Monarch maximises over its set."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    entropy = -(torch.where(a > 0, a * a.clamp_min(1e-30).log(), 0.0)).sum(-1)
    return ((a * scores).sum(-1) + entropy).sum()


# --- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("pad_type", PADS)
@pytest.mark.parametrize("block", ["one", "seq", "beyond"])
def test_exact_softmax_at_extreme_block_sizes(steps, pad_type, block):
    q, k, v = qkv(seq=23)
    size = {"one": 1, "seq": 23, "beyond": 40}[block]
    out = ma(q, k, v, block_size=size, num_steps=steps, pad_type=pad_type)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)
    # The op runs b >= N as softmax itself; the algorithm must be exact there too (the reference).
    from monarch_convert.kernels.layout import sequence_layout
    from monarch_convert.kernels.reference import monarch_attention_torch

    layout = sequence_layout(None, q.shape[0], 23, size, pad_type, q.device)
    ref = monarch_attention_torch(q, k, v, layout, size, steps, q.shape[-1] ** -0.5)
    torch.testing.assert_close(ref, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", STEPS)
def test_exact_softmax_with_padding_mask(steps):
    q, k, v = qkv(batch=1, seq=30)
    mask = torch.zeros(1, 30, dtype=torch.bool)
    mask[:, 4:21] = True
    out = ma(q, k, v, mask, block_size=1, num_steps=steps)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(out[:, :, mask[0]], want[:, :, mask[0]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("pad_type", PADS)
def test_dense_matrix_is_row_stochastic_and_applied(steps, pad_type):
    q, k, v = qkv(seq=26)
    a = dense_matrix(q, k, block_size=5, num_steps=steps, pad_type=pad_type)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), rtol=1e-5, atol=1e-5)
    out = ma(q, k, v, block_size=5, num_steps=steps, pad_type=pad_type)
    torch.testing.assert_close(out, a @ v, rtol=1e-4, atol=1e-5)
    # It really is an approximation: far from softmax on random inputs, and a Monarch matrix.
    assert not torch.allclose(a, torch.softmax(q @ k.transpose(-1, -2) / 4, -1), atol=1e-2)


def test_objective_never_decreases_with_steps():
    q, k, _ = qkv(batch=1, heads=4, seq=36, spread=1.5)
    values = [objective(dense_matrix(q, k, block_size=6, num_steps=t), q, k).item() for t in (1, 2, 3, 4)]
    assert all(b >= a - 1e-4 for a, b in zip(values, values[1:])), values
    exact = objective(torch.softmax(q @ k.transpose(-1, -2) / 4, -1), q, k).item()
    assert values[-1] <= exact + 1e-4


def test_value_head_dim_may_differ():
    q, k, v = qkv(seq=17, dim=16, dv=24)
    out = ma(q, k, v, block_size=17)
    assert out.shape == (2, 3, 17, 24)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


# --- batch invariance --------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("pad_type", PADS)
def test_batch_invariance_any_left_or_right_padding(steps, pad_type):
    n, total = 20, 47
    q, k, v = qkv(batch=1, seq=n, seed=1)
    alone = ma(q, k, v, block_size=6, num_steps=steps, pad_type=pad_type)
    for left in (0, 3, 13, total - n):
        bq, bk, bv = qkv(batch=3, seq=total, seed=2 + left)  # junk everywhere else
        mask = torch.zeros(3, total, dtype=torch.bool)
        mask[1, left : left + n] = True
        mask[0, :] = True  # neighbours of other lengths share the batch
        mask[2, 5:11] = True
        for t, src in ((bq, q), (bk, k), (bv, v)):
            t[1, :, left : left + n] = src[0]
        out = ma(bq, bk, bv, mask, block_size=6, num_steps=steps, pad_type=pad_type)
        torch.testing.assert_close(out[1:2, :, left : left + n], alone, rtol=1e-5, atol=1e-5)
        assert (out[~mask[:, None, :].expand(-1, 3, -1)] == 0).all()


# --- numerics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
def test_no_nan_with_empty_blocks_and_empty_sequences(steps):
    q, k, v = qkv(batch=3, seq=32)
    mask = torch.zeros(3, 32, dtype=torch.bool)
    mask[0, :3] = True  # one real token block; the rest are all padding
    mask[1, [0, 9, 30]] = True  # scattered real tokens
    # sequence 2 has no real token at all
    for pad_type in PADS:
        out = ma(q, k, v, mask, block_size=4, num_steps=steps, pad_type=pad_type)
        assert torch.isfinite(out).all()
        assert (out[2] == 0).all()
    # All real tokens of sequence 1 form one block of 3 (b=4): exact softmax among them.
    want = F.scaled_dot_product_attention(*(x[1:2, :, mask[1]] for x in (q, k, v)))
    torch.testing.assert_close(out[1:2, :, mask[1]], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_use_float32_statistics(dtype):
    # Logits of several hundred overflow exp() in half precision and lose everything in bf16 sums.
    q, k, v = qkv(seq=40, dtype=dtype, spread=6.0)
    out = ma(q, k, v, block_size=7, num_steps=2)
    assert out.dtype == dtype and torch.isfinite(out).all()
    want = ma(q.float(), k.float(), v.float(), block_size=7, num_steps=2)
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    torch.testing.assert_close(out.float(), want, rtol=tol, atol=tol)


# --- cost --------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("seq", [64, 100, 256])
def test_matmul_cost_follows_section_3(steps, seq):
    d = 8
    q, k, v = qkv(batch=1, heads=1, seq=seq, dim=d)
    b = math.ceil(math.sqrt(seq))
    m = -(-seq // b)
    with FlopCounterMode(display=False) as counter:
        ma(q, k, v, block_size=b, num_steps=steps)
    n_pad = m * b
    macs = (2 * steps + 1) * n_pad * b * d + 2 * steps * n_pad * m * d
    assert counter.get_total_flops() == 2 * macs
    if seq == 256 and steps == 1:  # 5 N^1.5 d: 15.6% of softmax's 2 N^2 d at N = 256
        assert macs / (2 * seq * seq * d) == 0.15625


# --- autograd ----------------------------------------------------------------------------------


def test_gradients_match_finite_differences_and_stay_finite():
    q, k, v = qkv(batch=2, heads=1, seq=10, dim=4, seed=3)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    params = [x.double().requires_grad_() for x in (q, k, v)]

    def loss(*xs):
        # The op computes in float32; finite differences on float32 inputs need a coarse step.
        out = ma(*(x.float() for x in xs), mask, block_size=3, num_steps=2)
        return (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()

    loss(*params).backward()
    for p in params:
        assert torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0
    eps = 1e-2
    for idx in [(0, 0, 2, 1), (1, 0, 4, 3), (1, 0, 6, 0)]:
        for p in params:
            with torch.no_grad():
                p[idx] += eps
                up = loss(*params)
                p[idx] -= 2 * eps
                down = loss(*params)
                p[idx] += eps
            assert abs((up - down).item() / (2 * eps) - p.grad[idx].item()) < 2e-2
    # Padding tokens do not influence anything.
    assert (params[1].grad[1, :, 7:] == 0).all() and (params[2].grad[1, :, 7:] == 0).all()


def test_a_loss_backpropagates_in_a_training_step():
    torch.manual_seed(0)
    proj = torch.nn.Linear(16, 48)
    x = torch.randn(2, 12, 16)
    target = torch.randn(2, 1, 12, 16)
    opt = torch.optim.SGD(proj.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        q, k, v = proj(x).unsqueeze(1).chunk(3, dim=-1)
        loss = F.mse_loss(ma(q, k, v, block_size=4), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --- argument checking -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(block_size=0), "block_size"),
        (dict(block_size=2.5), "block_size"),
        (dict(num_steps=0), "num_steps"),
        (dict(pad_type="middle"), "pad_type"),
        (dict(backend="cuda-magic"), "backend"),
        (dict(mask=torch.ones(2, 5, dtype=torch.bool)), "key_padding_mask"),
        (dict(mask=torch.ones(2, 9)), "key_padding_mask"),
        (dict(k=torch.randn(2, 3, 8, 16)), "q, k, v"),
        (dict(k=torch.randn(2, 3, 9, 8)), "head_dim"),
        (dict(q=torch.randn(3, 9, 16)), "q must be a 4-D tensor"),
        (dict(v=torch.randn(2, 3, 9, 16, dtype=torch.float64)), "v must be float16"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(change, needle):
    q, k, v = qkv(seq=9)
    args = dict(q=q, k=k, v=v, mask=None, block_size=3, num_steps=1, pad_type="post", backend="torch")
    args.update(change)
    with pytest.raises(ValueError, match=needle):
        monarch_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("mask"), **args)


# --- extreme inputs: the output stays in the convex hull of v -------------------------------------

EXTREME = ("constant", "constant_near_max", "random_large", "near_max", "scale_above_one")


def extreme_qkv(kind, batch=2, heads=2, seq=23, dim=16, dtype=torch.float32, seed=0):
    """(q, k, v, scale) with logits far beyond softmax's usual range, every value within float16's:
    q = k = one constant vector (all logits tied, at 1e8-1e9), large random vectors, magnitudes up to
    float16's 65504, or keys of 3e4 with a scale of 4 (``s * R @ k`` beyond float16's range)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, heads, seq, dim)
    scale = None
    if kind in ("constant", "constant_near_max"):
        q = torch.full(shape, 1e4 if kind == "constant" else 6e4)
        k = q.clone()
    elif kind == "random_large":
        q, k = ((1e4 * torch.randn(shape, generator=g)).clamp(-6e4, 6e4) for _ in range(2))
    elif kind == "near_max":
        sign = torch.randn(shape, generator=g).sign()
        q = sign * (3e4 + 3.5e4 * torch.rand(shape, generator=g))
        k = q.flip(2)
    else:
        q, k, scale = 100 * torch.randn(shape, generator=g), 3e4 * torch.rand(shape, generator=g), 4.0
    v = 3 * torch.randn(shape, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype), scale


def hull_excess(out, v, mask=None):
    """How far the outputs at real tokens lie outside [min v, max v] of their head and feature (over
    the head's real tokens), relative to the head's max |v|; 0 inside. Outputs must be finite."""
    assert torch.isfinite(out).all(), "NaN/Inf in the output"
    real = torch.ones(v.shape[0], v.shape[2], dtype=torch.bool) if mask is None else mask.cpu()
    keep = real[:, None, :, None]
    vv, o = v.float().cpu(), out.float().cpu()
    hi = vv.masked_fill(~keep, float("-inf")).amax(dim=2, keepdim=True)
    lo = vv.masked_fill(~keep, float("inf")).amin(dim=2, keepdim=True)
    excess = torch.maximum(o - hi, lo - o).clamp_min(0).masked_fill(~keep, 0)
    return (excess / vv.abs().amax(dim=(2, 3), keepdim=True)).max().item()


def hull_tolerance(dtype) -> float:
    """Rounding allowed outside the hull: the weights and the output are rounded to the input dtype."""
    return 4 * torch.finfo(dtype).eps


def extreme_mask(batch, seq):
    """Right-padded sequences of other lengths, none empty (the hull of no token is empty)."""
    lengths = torch.tensor([seq, max(1, seq - 8)] + [3] * (batch - 2))[:batch]
    return torch.arange(seq)[None, :] < lengths[:, None]


def check_extreme_hull(run, kind, dtype, cases=((23, 5, None),), heads=2, dim=16):
    """Outputs of ``run(q, k, v, mask, b, steps, pad_type, scale, opts)`` on ``extreme_qkv(kind)``
    (CPU tensors) stay in the hull of v, for T = 1 and 2, with and without a mask, for each
    (seq, b, opts) case."""
    for seq, b, opts in cases:
        q, k, v, scale = extreme_qkv(kind, heads=heads, seq=seq, dim=dim, dtype=dtype)
        mask = extreme_mask(2, seq)
        for steps, pad_type in ((1, "post"), (2, "pre"), (2, "post")):
            for m in (None, mask):
                out = run(q, k, v, m, b, steps, pad_type, scale, opts)
                assert out.dtype == dtype
                assert hull_excess(out, v, m) <= hull_tolerance(dtype), (seq, b, steps, pad_type, m is not None)


def check_tied_logits_average_v(run, dtype):
    """q = k = one vector: every logit ties, so softmax (and Monarch, whose blocks are then all
    alike) is the plain mean of v, however large the logits. ``run(q, k, v, steps)``."""
    q, k, v, _ = extreme_qkv("constant", seq=24, dtype=dtype)
    for steps in (1, 2):
        want = v.float().mean(dim=2, keepdim=True).expand(*v.shape)
        torch.testing.assert_close(run(q, k, v, steps).float(), want, rtol=0,
                                   atol=4e-3 if dtype == torch.float16 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", EXTREME)
def test_extreme_logits_stay_in_the_convex_hull_of_v(kind, dtype):
    # The output is a convex combination of rows of v. Before, q = k = a constant vector of 1e4 gave
    # outputs up to 2-20x max|v|: log p = x - logsumexp(x) lost log(count) in float32 at logits of
    # 1e9, so every tied weight became 1 and rows of R and L summed to their count.
    def run(q, k, v, mask, b, steps, pad_type, scale, opts):
        return ma(q, k, v, mask, block_size=b, num_steps=steps, pad_type=pad_type, scale=scale)

    check_extreme_hull(run, kind, dtype, cases=((23, 5, None), (24, 4, None)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tied_extreme_logits_attend_uniformly(dtype):
    check_tied_logits_average_v(lambda q, k, v, steps: ma(q, k, v, block_size=4, num_steps=steps), dtype)


# --- block sizes beyond the sequence, and empty inputs ---------------------------------------------

HUGE_BLOCKS = (24, 25, 2**31, 2**62, 2**63 - 1)


@pytest.mark.parametrize("pad_type", PADS)
def test_block_beyond_the_sequence_runs_as_one_block(pad_type):
    # Before, block_size=2**31 on a 10-token input allocated 2**31 slots per head (OOM killer), and
    # 2**63 - 1 overflowed int64 in the layout. Any b >= N is one block of N slots: exact softmax.
    q, k, v = qkv(seq=24)
    mask = extreme_mask(2, 24)
    for m in (None, mask):
        at_n = ma(q, k, v, m, block_size=24, num_steps=2, pad_type=pad_type)
        for b in HUGE_BLOCKS:
            assert torch.equal(ma(q, k, v, m, block_size=b, num_steps=2, pad_type=pad_type), at_n), b
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(at_n[mask[:, None, :].expand(-1, 3, -1)],
                               want[mask[:, None, :].expand(-1, 3, -1)], rtol=1e-5, atol=1e-5)


def test_block_beyond_the_sequence_costs_what_b_equal_n_costs():
    from monarch_convert.kernels.layout import sequence_layout

    q, k, v = qkv(batch=1, heads=1, seq=10, dim=8)
    with FlopCounterMode(display=False) as at_n:
        ma(q, k, v, block_size=10)
    with FlopCounterMode(display=False) as huge:
        ma(q, k, v, block_size=2**62)
    assert huge.get_total_flops() == at_n.get_total_flops()
    with FlopCounterMode(display=False) as softmax:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert at_n.get_total_flops() == softmax.get_total_flops()  # softmax itself, at its cost
    layout = sequence_layout(torch.ones(2, 10, dtype=torch.bool), 2, 10, 2**63 - 1, "pre", q.device)
    assert layout.num_blocks == 1 and layout.offsets.tolist() == [0, 0]  # never padded beyond N


@pytest.mark.parametrize("block_size", [2**63, 10**20])
def test_unrepresentable_block_size_is_a_one_line_error(block_size):
    q, k, v = qkv(seq=9)
    with pytest.raises(ValueError, match="block_size must be at most") as info:
        ma(q, k, v, block_size=block_size)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shape", [(2, 3, 0, 8), (0, 3, 5, 8), (2, 0, 5, 8)])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_empty_inputs_give_an_empty_output_as_sdpa(shape, backend):
    # Before, seq_len = 0 raised "index -1 is out of bounds".
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(shape, generator=g).requires_grad_() for _ in range(2))
    v = torch.randn(*shape[:3], 6, generator=g).requires_grad_()
    want = F.scaled_dot_product_attention(q, k, v)
    for mask in (None, torch.ones(shape[0], shape[2], dtype=torch.bool)):
        out = monarch_attention(q, k, v, mask, block_size=4, num_steps=2, backend=backend)
        assert out.shape == want.shape and out.dtype == want.dtype
        out.sum().backward()  # as SDPA's: connected to the inputs, with (empty) gradients
        assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
