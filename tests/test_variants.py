"""The op's two options beyond the published algorithm, PyTorch reference backend: exact diagonal
blocks and global keys (docs/algorithm.md, section 7). Exactness limits, the published algorithm
at T = 1, batch invariance, numerics, cost, autograd and argument checking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_op import check_extreme_hull, dense_matrix, ma, objective, qkv
from torch.utils.flop_counter import FlopCounterMode

from monarch_convert.flops import monarch_attention_flops, monarch_attention_macs
from monarch_convert.kernels.layout import sequence_layout
from monarch_convert.kernels.reference import monarch_attention_torch
from monarch_convert.kernels.variants import select_global_keys

STEPS = (1, 2, 3)
PADS = ("post", "pre")
# (exact_diagonal, global_keys): each option alone and both.
VARIANTS = [(True, 0), (False, 3), (True, 3)]


def var(variant) -> dict:
    return dict(exact_diagonal=variant[0], global_keys=variant[1])


def softmax_at_real(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :])


def right_mask(lengths, n):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


# --- exactness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("pad_type", PADS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_softmax_at_b_one_and_b_n(variant, pad_type, steps):
    q, k, v = qkv(seq=13)
    mask = right_mask([13, 9], 13)
    want = softmax_at_real(q, k, v, mask)
    real = mask[:, None, :].expand(-1, 3, -1)
    for b in (1, 13):
        out = ma(q, k, v, mask, block_size=b, num_steps=steps, pad_type=pad_type, **var(variant))
        torch.testing.assert_close(out[real], want[real], rtol=1e-5, atol=1e-5)
        # The op runs b >= N as softmax; the algorithm with its options is exact there too.
        layout = sequence_layout(mask, 2, 13, b, pad_type, q.device)
        ref = monarch_attention_torch(q, k, v, layout, b, steps, 0.25, *variant)
        torch.testing.assert_close(ref[real], want[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pad_type", PADS)
@pytest.mark.parametrize("global_keys", [0, 3])
def test_exact_diagonal_is_the_published_algorithm_at_one_step(global_keys, pad_type):
    q, k, v = qkv(seq=29, spread=1.5)
    mask = right_mask([29, 17], 29)
    for m in (None, mask):
        published = ma(q, k, v, m, block_size=5, pad_type=pad_type, global_keys=global_keys)
        diagonal = ma(q, k, v, m, block_size=5, pad_type=pad_type, global_keys=global_keys, exact_diagonal=True)
        torch.testing.assert_close(diagonal, published, rtol=1e-6, atol=1e-6)
    # ... and not from T = 2 on.
    assert not torch.allclose(ma(q, k, v, block_size=5, num_steps=2, exact_diagonal=True),
                              ma(q, k, v, block_size=5, num_steps=2), atol=1e-3)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("pad_type", PADS)
@pytest.mark.parametrize("exact_diagonal", [False, True])
def test_as_many_global_keys_as_real_tokens_is_softmax(exact_diagonal, pad_type, steps):
    q, k, v = qkv(batch=3, seq=20)
    mask = right_mask([20, 6, 5], 20)
    mask[2] = mask[2].flip(0)  # left-padded
    out = ma(q, k, v, mask, block_size=4, num_steps=steps, pad_type=pad_type, global_keys=6,
             exact_diagonal=exact_diagonal)
    want = softmax_at_real(q, k, v, mask)
    for s in (1, 2):  # at most 6 real tokens: all are global keys
        torch.testing.assert_close(out[s][:, mask[s]], want[s][:, mask[s]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], want[0], atol=1e-2)  # 20 tokens: still an approximation
    everything = ma(q, k, v, mask, block_size=4, num_steps=steps, pad_type=pad_type, global_keys=50)
    real = mask[:, None, :].expand(-1, 3, -1)
    torch.testing.assert_close(everything[real], want[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_dense_matrix_is_row_stochastic_and_applied(variant, steps):
    q, k, v = qkv(seq=26)
    a = dense_matrix(q, k, block_size=5, num_steps=steps, pad_type="pre", **var(variant))
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), rtol=1e-5, atol=1e-5)
    out = ma(q, k, v, block_size=5, num_steps=steps, pad_type="pre", **var(variant))
    torch.testing.assert_close(out, a @ v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_objective_never_decreases_with_steps(variant):
    # Each step is an exact maximisation over the variant's (larger) family (section 7).
    q, k, _ = qkv(batch=1, heads=4, seq=36, spread=1.5)
    values = [objective(dense_matrix(q, k, block_size=6, num_steps=t, **var(variant)), q, k).item()
              for t in (1, 2, 3, 4)]
    assert all(b >= a - 1e-4 for a, b in zip(values, values[1:])), values
    published = objective(dense_matrix(q, k, block_size=6, num_steps=4), q, k).item()
    exact = objective(torch.softmax(q @ k.transpose(-1, -2) / 4, -1), q, k).item()
    assert published - 1e-4 <= values[-1] <= exact + 1e-4


def test_exact_diagonal_blocks_are_exact_within_blocks():
    # Inside each query's own block, its attention row is the block's softmax up to one factor.
    q, k, _ = qkv(batch=1, heads=2, seq=24)
    a = dense_matrix(q, k, block_size=6, num_steps=3, exact_diagonal=True)
    s = q @ k.transpose(-1, -2) / 4
    for blk in range(4):
        rows = slice(6 * blk, 6 * blk + 6)
        diag = a[..., rows, rows]
        want = torch.softmax(s[..., rows, rows], -1) * diag.sum(-1, keepdim=True)
        torch.testing.assert_close(diag, want, rtol=1e-5, atol=1e-6)


# --- global key choice -------------------------------------------------------------------------


def test_global_keys_are_the_top_scores_against_the_mean_real_query():
    q, k, _ = qkv(batch=2, heads=2, seq=12, seed=4)
    mask = right_mask([12, 8], 12)
    positions, real = select_global_keys(q, k, mask, 3)
    for s in range(2):
        n = int(mask[s].sum())
        score = k[s, :, :n] @ q[s, :, :n].mean(1)[..., None]
        want = score.squeeze(-1).topk(3, dim=-1).indices
        assert torch.equal(positions[s].sort(-1).values, want.sort(-1).values)
    assert real.all()
    # Ties go to the earlier position; padding keys are never chosen as real.
    k_tied = torch.ones(1, 1, 6, 16)
    positions, real = select_global_keys(torch.ones(1, 1, 6, 16), k_tied, right_mask([4], 6), 5)
    assert positions[0, 0, :4].tolist() == [0, 1, 2, 3] and real.tolist() == [[[True] * 4 + [False]]]


# --- batch invariance --------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("pad_type", PADS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_invariance_any_left_or_right_padding(variant, pad_type, steps):
    n, total = 20, 41
    q, k, v = qkv(batch=1, seq=n, seed=1)
    alone = ma(q, k, v, block_size=6, num_steps=steps, pad_type=pad_type, **var(variant))
    for left in (0, 7, total - n):
        bq, bk, bv = qkv(batch=3, seq=total, seed=2 + left)  # junk everywhere else
        mask = torch.zeros(3, total, dtype=torch.bool)
        mask[1, left : left + n] = True
        mask[0, :] = True  # neighbours of other lengths share the batch
        mask[2, 5:8] = True  # fewer real tokens than global keys
        for t, src in ((bq, q), (bk, k), (bv, v)):
            t[1, :, left : left + n] = src[0]
        out = ma(bq, bk, bv, mask, block_size=6, num_steps=steps, pad_type=pad_type, **var(variant))
        torch.testing.assert_close(out[1:2, :, left : left + n], alone, rtol=1e-5, atol=1e-5)
        assert (out[~mask[:, None, :].expand(-1, 3, -1)] == 0).all()


# --- numerics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_no_nan_with_empty_blocks_and_empty_sequences(variant, steps):
    q, k, v = qkv(batch=3, seq=32)
    mask = torch.zeros(3, 32, dtype=torch.bool)
    mask[0, :3] = True
    mask[1, [0, 9, 30]] = True
    # sequence 2 has no real token at all
    for pad_type in PADS:
        out = ma(q, k, v, mask, block_size=4, num_steps=steps, pad_type=pad_type, **var(variant))
        assert torch.isfinite(out).all()
        assert (out[~mask[:, None, :].expand(-1, 3, -1)] == 0).all()
    want = softmax_at_real(*(x[1:2, :, mask[1]] for x in (q, k, v)), None)
    torch.testing.assert_close(out[1:2, :, mask[1]], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["constant", "random_large", "scale_above_one"])
def test_extreme_logits_stay_in_the_convex_hull_of_v(kind, dtype):
    def run(q, k, v, mask, b, steps, pad_type, scale, opts):
        return ma(q, k, v, mask, block_size=b, num_steps=steps, pad_type=pad_type, scale=scale, **opts)

    check_extreme_hull(run, kind, dtype, cases=[(23, 5, var(x)) for x in VARIANTS])


# --- cost --------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("variant", VARIANTS + [(False, 40)])
def test_matmul_cost_follows_section_7(variant, steps):
    seq, d, b = 30, 8, 6
    q, k, v = qkv(batch=1, heads=1, seq=seq, dim=d)
    with FlopCounterMode(display=False) as counter:
        ma(q, k, v, block_size=b, num_steps=steps, **var(variant))
    assert counter.get_total_flops() == monarch_attention_flops(seq, d, b, steps, **var(variant))
    base = monarch_attention_macs(seq, d, b, steps)
    extra = monarch_attention_macs(seq, d, b, steps, **var(variant)) - base
    diagonal = variant[0] * (steps > 1) * seq * b * d
    glob = (variant[1] > 0) * (2 * seq * d + 2 * seq * min(variant[1], seq) * d)
    assert extra == diagonal + glob
    # Defaults: the published cost; b >= N: softmax's, options or not.
    assert monarch_attention_macs(seq, d, seq, steps, **var(variant)) == 2 * seq * seq * d
    with pytest.raises(ValueError, match="global_keys"):
        monarch_attention_macs(seq, d, b, global_keys=-1)


# --- autograd ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_float64(variant):
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 1, 7, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = right_mask([7, 5], 7)
    layout = sequence_layout(mask, 2, 7, 3, "pre", q.device)

    def f(q, k, v):
        return monarch_attention_torch(q, k, v, layout, 3, 2, 0.5, *variant)

    assert f(q, k, v).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (q, k, v))


# --- argument checking -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(exact_diagonal=1), "exact_diagonal"),
        (dict(exact_diagonal="yes"), "exact_diagonal"),
        (dict(global_keys=-1), "global_keys"),
        (dict(global_keys=2.0), "global_keys"),
        (dict(global_keys=True), "global_keys"),
    ],
)
def test_bad_options_raise_value_error_naming_them(change, needle):
    q, k, v = qkv(seq=9)
    with pytest.raises(ValueError, match=needle):
        ma(q, k, v, block_size=3, **change)

