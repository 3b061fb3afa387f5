"""The PyTorch inference path (``kernels/torch_inference.py``) against the reference, and when the
entry point takes it. The semantic tests of ``test_op.py`` (exactness, batch invariance, no NaN,
extreme logits, the FLOP count) run through it too: they call the op without grad."""

from __future__ import annotations

import pytest
import torch
from masks import key_padding_mask

from monarch_convert import monarch_attention
from monarch_convert.kernels import torch_inference
from monarch_convert.kernels.layout import sequence_layout
from monarch_convert.kernels.reference import monarch_attention_torch

# (batch, heads, seq, head dim, value head dim): b dividing N or not, a value dim of its own, N < b.
SHAPES = [(3, 2, 23, 16, 16), (2, 3, 64, 8, 12), (1, 1, 5, 4, 4)]
MASKS = [None, "random", "right", "left", "empty_row"]


def run_both(shape, block, steps, pad_type, kind, dtype, seed=0):
    B, H, N, d, dv = shape
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, width, generator=g).to(dtype) for width in (d, d, dv))
    mask = key_padding_mask(kind, B, N, g)
    layout = sequence_layout(mask, B, N, block, pad_type, q.device)
    ref = monarch_attention_torch(q, k, v, layout, block, steps, d**-0.5)
    out = torch_inference.monarch_attention_inference(q, k, v, None if mask is None else layout, block, steps,
                                                      d**-0.5, pad_type)
    return out, ref


@pytest.mark.parametrize("chunk", [1, 300, torch_inference.CHUNK_ELEMENTS], ids=["pair", "some", "default"])
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("pad_type", ["post", "pre"])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_equals_the_reference(steps, pad_type, kind, chunk, monkeypatch):
    monkeypatch.setattr(torch_inference, "CHUNK_ELEMENTS", chunk)  # one (sequence, head) pair a chunk, some, all
    for shape in SHAPES:
        for block in (1, 3, 8):
            out, ref = run_both(shape, block, steps, pad_type, kind, torch.float32)
            assert out.shape == ref.shape and out.dtype == ref.dtype
            assert torch.isfinite(out).all()
            torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_in_float32_like_the_reference(dtype):
    out, ref = run_both((2, 3, 40, 16, 16), 6, 2, "post", "right", dtype)
    assert out.dtype == dtype
    # Both round one float32 result to the input dtype: at most one unit in the last place apart.
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)


def test_output_is_the_layout_transformers_returns():
    """(B, H, N, dv) as a transposed view of a contiguous (B, N, H, dv): transformers' transpose back
    costs nothing."""
    out, _ = run_both((2, 3, 23, 16, 8), 5, 1, "post", "left", torch.float32)
    assert out.transpose(1, 2).is_contiguous()


def test_padding_contents_do_not_reach_real_tokens():
    """Inf and NaN at padding positions: the reference zeroes them; so does this path."""
    B, H, N, d = 2, 2, 30, 8
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, H, N, d, generator=g) for _ in range(3))
    mask = torch.arange(N)[None, :] < torch.tensor([[N], [17]])
    for x, junk in ((q, float("nan")), (k, float("inf")), (v, float("nan"))):
        x[1, :, 17:] = junk
    for pad_type in ("post", "pre"):
        out = monarch_attention(q, k, v, mask, block_size=4, num_steps=2, pad_type=pad_type, backend="torch")
        assert torch.isfinite(out).all() and (out[1, :, 17:] == 0).all()


@pytest.mark.parametrize("kind", ["right", "left"])
def test_a_padded_sequence_runs_on_its_own_blocks(kind, monkeypatch):
    """Each chunk runs on the blocks its longest sequence fills: lengths 40, 10 and 0 at b = 8 run
    on 5 blocks, 2 blocks and not at all (right padding also reads only the first 16 tokens of the
    second sequence), and the outputs are still the reference's."""
    seen = []
    original = torch_inference._chunk

    def spy(q, k, v, layout, b, m, *args):
        seen.append((q.shape[0], q.shape[2], m))
        return original(q, k, v, layout, b, m, *args)

    monkeypatch.setattr(torch_inference, "_chunk", spy)
    monkeypatch.setattr(torch_inference, "CHUNK_ELEMENTS", 1)  # a chunk per (sequence, head) pair
    B, H, N, d = 3, 2, 40, 8
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, H, N, d, generator=g) for _ in range(3))
    lengths = torch.tensor([[40], [10], [0]])
    pos = torch.arange(N)[None, :]
    mask = pos < lengths if kind == "right" else pos >= N - lengths
    layout = sequence_layout(mask, B, N, 8, "post", q.device)
    out = torch_inference.monarch_attention_inference(q, k, v, layout, 8, 2, d**-0.5, "post")
    assert seen == [(1, 40, 5)] * H + [(1, 16 if kind == "right" else 40, 2)] * H
    torch.testing.assert_close(out, monarch_attention_torch(q, k, v, layout, 8, 2, d**-0.5), rtol=2e-5, atol=2e-5)
    assert (out[2] == 0).all() and (out[1, :, ~mask[1]] == 0).all()  # rows no chunk wrote: zeros


@pytest.fixture
def calls(monkeypatch):
    """One entry per call of the path (the entry point and the CPU custom op reach it through this
    module's attribute)."""
    made = []
    original = torch_inference.monarch_attention_inference

    def spy(*args, **kwargs):
        made.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_inference, "monarch_attention_inference", spy)
    return made


def test_the_entry_point_takes_it_for_inference_only(calls):
    """Inference without the options runs this path; inputs that need grad and the options run
    the reference (it alone has the options and NaN-free gradients)."""
    q, k, v = (torch.randn(1, 2, 20, 8) for _ in range(3))
    mask = torch.ones(1, 20, dtype=torch.bool)
    args = dict(block_size=4, backend="torch")
    monarch_attention(q, k, v, mask, **args)
    assert len(calls) == 1
    monarch_attention(q, k, v, mask, exact_diagonal=True, **args)
    monarch_attention(q, k, v, global_keys=2, **args)
    monarch_attention(q.requires_grad_(), k, v, **args).sum().backward()
    assert len(calls) == 1 and q.grad is not None
    with torch.no_grad():
        monarch_attention(q, k, v, **args)
    assert len(calls) == 2


def test_compiled_calls_run_it_as_one_custom_op(calls):
    """Under torch.compile on the CPU, inference runs this path as one opaque custom op
    (``torch_inference_op.py``: no graph break, fullgraph=True holds) with the eager call's output;
    a compiled call that needs grad still runs the reference, and its gradients flow; an exported
    graph holds aten ops only (the reference's)."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 40, 8, generator=g) for _ in range(3))
    mask = torch.arange(40)[None, :] < torch.tensor([[40], [17]])

    def f(q, k, v, mask):
        return monarch_attention(q, k, v, mask, block_size=8, num_steps=2, backend="torch")

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    with torch.no_grad():
        for m in (mask, None):
            expected = f(q, k, v, m)
            calls.clear()
            torch.testing.assert_close(compiled(q, k, v, m), expected, rtol=0, atol=0)
            assert len(calls) == 1
    calls.clear()
    q.requires_grad_()
    torch._dynamo.reset()  # aot_eager: the same routing as Inductor, without its C++ build of the backward
    torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v, mask).sum().backward()
    assert not calls and q.grad is not None and torch.isfinite(q.grad).all()

    class Attention(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return f(q, k, v, mask)

    with torch.no_grad():
        exported = torch.export.export(Attention(), (q.detach(), k, v, mask))
        assert not [n for n in exported.graph.nodes if "monarch" in str(n.target)]
        torch.testing.assert_close(exported.module()(q.detach(), k, v, mask), f(q.detach(), k, v, mask))
