"""The Triton backward kernels (docs/algorithm.md, section 9) against the reference's autograd, on
the CPU through Triton's interpreter (``tests/conftest.py`` turns it on where there is no CUDA), and
the reference's own gradients against finite differences in float64.

Gradients are compared with the reference run in float64 on the same inputs. Every case also checks
that padding positions get exactly zero gradient. Shapes are small (the interpreter is slow); the
GPU tests (``tests/gpu/test_gpu_backward.py``) cover realistic sizes and float16 / bfloat16.
"""

from __future__ import annotations

import importlib
import zlib

import pytest
import torch

triton = pytest.importorskip("triton")

from masks import key_padding_mask  # noqa: E402

from monarch_convert.kernels import ops  # noqa: E402
from monarch_convert.kernels.layout import sequence_layout  # noqa: E402
from monarch_convert.kernels.reference import monarch_attention_torch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

TOL = {torch.float32: 2e-5, torch.float16: 1e-2}


@pytest.fixture(scope="module", autouse=True)
def kern():
    import triton.language as tl

    if "Interpreted" not in type(tl.zeros).__name__:
        pytest.skip("Triton's interpreter is off: export TRITON_INTERPRET=1 before triton is first imported")
    from monarch_convert.kernels.triton import backward, backward_launch, backward_wide, common, launch

    if "Interpreted" not in type(backward._r_bwd_kernel).__name__:
        for module in (common, backward, backward_wide, backward_launch, launch):
            importlib.reload(module)
    return backward_launch


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _tensor(shape, dtype, layout, gen):
    B, H, N, d = shape
    if layout == "bnhd":  # what transformers passes: (B, N, H, d) transposed
        return torch.randn(B, N, H, d, generator=gen).to(dtype).transpose(1, 2)
    if layout == "gapped":  # last dim strided too
        return torch.randn(B, H, N, 2 * d, generator=gen).to(dtype)[..., ::2]
    return torch.randn(B, H, N, d, generator=gen).to(dtype)


def _mask(kind, B, N, gen):
    return key_padding_mask(kind, B, N, gen, short_last=True)


def _grads(q, k, v, mask, grad, b, T, pad, backend, scale=None):
    """(output, dq, dk, dv) through the public op; ``backend="torch"`` runs in float64."""
    if backend == "torch":
        q, k, v, grad = (x.detach().double() for x in (q, k, v, grad))
        lay = sequence_layout(mask, q.shape[0], q.shape[2], b, pad, q.device)
        xs = [x.requires_grad_() for x in (q, k, v)]
        out = monarch_attention_torch(*xs, lay, b, T, scale or q.shape[-1] ** -0.5)
    else:
        xs = [x.detach().requires_grad_() for x in (q, k, v)]
        out = ops.monarch_attention(*xs, mask, block_size=b, num_steps=T, pad_type=pad, backend=backend, scale=scale)
    return (out, *torch.autograd.grad(out, xs, grad))


# (B, H, N, d, dv, b, T, pad, mask, dtype, layout)
CASES = [
    (2, 2, 37, 16, 16, 5, 1, "post", None, torch.float32, "bhnd"),
    (3, 2, 37, 16, 24, 5, 1, "pre", "right", torch.float32, "bnhd"),
    (3, 1, 30, 24, 16, 4, 1, "post", "left", torch.float16, "bhnd"),
    (2, 2, 45, 16, 16, 7, 2, "pre", "random", torch.float32, "gapped"),
    (3, 1, 30, 16, 16, 4, 2, "post", "empty_row", torch.float32, "bhnd"),
    (2, 1, 40, 72, 48, 6, 3, "pre", "left", torch.float32, "bnhd"),
    (1, 1, 20, 16, 16, 1, 2, "post", None, torch.float32, "bhnd"),  # b = 1: softmax itself
    # float16 with blocks of 40: the timed tiles (one chunk of a whole block per R-backward program)
    (1, 1, 1200, 16, 16, 40, 1, "post", "right", torch.float16, "bhnd"),
]


def _case_id(case) -> str:
    return "-".join(str(x).replace("torch.", "") for x in case)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_gradients_match_reference(case):
    B, H, N, d, dv, b, T, pad, mask_kind, dtype, layout = case
    gen = torch.Generator().manual_seed(zlib.crc32(_case_id(case).encode()))
    q, k = (_tensor((B, H, N, d), dtype, layout, gen) for _ in range(2))
    v = _tensor((B, H, N, dv), dtype, layout, gen)
    mask = _mask(mask_kind, B, N, gen)
    grad = torch.randn(B, H, N, dv, generator=gen).to(dtype)
    out, *got = _grads(q, k, v, mask, grad, b, T, pad, "triton")
    _, *want = _grads(q, k, v, mask, grad, b, T, pad, "torch")
    for name, g, w, x in zip("qkv", got, want, (q, k, v)):
        assert g.dtype == dtype and g.shape == x.shape, name
        assert torch.isfinite(g).all(), name
        assert _rel(g, w) < TOL[dtype], (name, _rel(g, w))
        if mask is not None:
            assert (g.transpose(1, 2)[~mask] == 0).all(), f"d{name} at padding positions"


def test_reference_passes_gradcheck_in_float64():
    """The reference's autograd, which the kernels are compared with, against finite differences:
    masks (a sequence of one block and a sequence of none), pre padding, T = 2."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 1, 7, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True] * 7, [False, True, True, True, False, True, False], [True, True] + [False] * 5])
    lay = sequence_layout(mask, 3, 7, 3, "pre", q.device)
    assert torch.autograd.gradcheck(lambda q, k, v: monarch_attention_torch(q, k, v, lay, 3, 2, 0.7), (q, k, v))


@pytest.mark.parametrize("T, pad", [(1, "post"), (2, "pre")])
def test_gradients_are_batch_invariant(T, pad):
    """A 13-token sequence gets the same gradients alone and inside a batch padded left, right and
    in the middle (the loss reads its real tokens only)."""
    gen = torch.Generator().manual_seed(17 + T)
    L, N, b = 13, 24, 4
    q, k, v = (torch.randn(1, 2, L, 16, generator=gen) for _ in range(3))
    grad = torch.randn(1, 2, L, 16, generator=gen)
    _, *alone = _grads(q, k, v, None, grad, b, T, pad, "triton")
    Q, K, V, G = (torch.randn(3, 2, N, 16, generator=gen) for _ in range(4))
    mask = torch.rand(3, N, generator=gen) > 0.5
    pos = torch.tensor([0, 1, 2, 5, 6, 7, 8, 12, 13, 17, 18, 22, 23])  # rows 1 and 2 hold it
    mask[1:] = False
    mask[1, pos], mask[2, N - L:] = True, True
    for row, at in ((1, pos), (2, torch.arange(N - L, N))):
        for x, y in ((Q, q), (K, k), (V, v), (G, grad)):
            x[row][:, at] = y[0]
    G = G.masked_fill(~mask[:, None, :, None], 0.0)
    _, *batched = _grads(Q, K, V, mask, G, b, T, pad, "triton")
    for a, g in zip(alone, batched):
        torch.testing.assert_close(g[1][:, pos], a[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g[2][:, N - L:], a[0], rtol=1e-5, atol=1e-6)


def test_compiled_training_step_matches_eager():
    """One step of a tiny model through ``torch.compile(fullgraph=True)``: the custom op and its
    backward are traced as single calls, and the gradients are those of eager mode."""
    gen = torch.Generator().manual_seed(5)
    proj = torch.nn.Linear(16, 3 * 32)
    x = torch.randn(2, 20, 16, generator=gen)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False

    def loss():
        q, k, v = proj(x).view(2, 20, 3, 2, 16).permute(2, 0, 3, 1, 4)
        out = ops.monarch_attention(q, k, v, mask, block_size=4, num_steps=1, backend="triton")
        return out.square().mean()

    torch._dynamo.reset()
    grads = []
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        proj.zero_grad()
        fn().backward()
        grads.append([p.grad.clone() for p in proj.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_eager_function_equals_the_custom_op():
    """Eager calls that need grad go through ``triton_function.py``'s autograd Function, not the
    custom op; both run the same launchers: the same output and gradients, bit for bit."""
    from monarch_convert.kernels.triton_op import monarch_attention_fwd

    gen = torch.Generator().manual_seed(6)
    q, k, v, grad = (torch.randn(2, 2, 21, 16, generator=gen) for _ in range(4))
    mask = _mask("right", 2, 21, gen)
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    out = ops.monarch_attention(*xs, mask, block_size=4, num_steps=2, pad_type="pre", backend="triton")
    assert type(out.grad_fn).__name__ == "MonarchAttentionFunctionBackward"
    ys = [x.clone().requires_grad_() for x in (q, k, v)]
    want = monarch_attention_fwd(*ys, mask, 4, 2, "pre", 16**-0.5)
    assert torch.equal(out, want)
    for a, b in zip(torch.autograd.grad(out, xs, grad), torch.autograd.grad(want, ys, grad)):
        assert torch.equal(a, b)
    out = ops.monarch_attention(*xs, mask, block_size=4, num_steps=2, pad_type="pre", backend="triton")
    dq, = torch.autograd.grad(out, xs[0], grad, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice|does not require grad"):  # no double backward
        dq.sum().backward()


def test_backward_op_opcheck():
    from monarch_convert.kernels.triton_op import (
        monarch_attention_bwd,
        monarch_attention_fwd,
        monarch_attention_fwd_saving,
    )

    gen = torch.Generator().manual_seed(4)
    q, k, v, g = (torch.randn(1, 2, 12, 16, generator=gen) for _ in range(4))
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, -3:] = False
    torch.library.opcheck(monarch_attention_bwd, (q, k, v, mask, g, 4, 2, "post", 0.25),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(monarch_attention_fwd, (*(x.requires_grad_() for x in (q, k, v)), mask, 4, 1, "pre", 0.25),
                          test_utils=("test_autograd_registration",))
    # The training op's second output is scratch, in part never written: its values are not compared.
    for T in (1, 2):
        torch.library.opcheck(monarch_attention_fwd_saving, (q, k, v, mask, 4, T, "pre", 0.25),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    saved = monarch_attention_fwd_saving(q, k, v, mask, 4, 1, "post", 0.25)[1]
    torch.library.opcheck(monarch_attention_bwd, (q, k, v, mask, g, 4, 1, "post", 0.25, False, 0, saved),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("N, b", [(70, 3), (45, 20)], ids=["blocks-per-offset", "keys-per-block"])
def test_beyond_one_tile(kern, monkeypatch, N, b):
    """Tiles of 16 here. More blocks per offset than a tile holds (m = 24): each query's L
    statistics first, then one program per tile of blocks, dq added atomically. More keys per block
    (b = 20): the R-programs run over key tiles."""
    monkeypatch.setattr(kern, "MAX_TILE", 16)
    gen = torch.Generator().manual_seed(N)
    q, k, v, grad = (torch.randn(2, 1, N, 16, generator=gen) for _ in range(4))
    mask = _mask("random", 2, N, gen)
    got = _grads(q, k, v, mask, grad, b, 2, "pre", "triton")[1:]
    want = _grads(q, k, v, mask, grad, b, 2, "pre", "torch")[1:]
    for g, w in zip(got, want):
        assert _rel(g, w) < TOL[torch.float32]
        assert (g.transpose(1, 2)[~mask] == 0).all()


def test_timed_tiles_only_where_timed(kern):
    """The backward's timed row chunks, warps and stages apply to the R- and L-backward programs at
    head dims up to 64 where they were timed (``timed``), and nowhere else."""
    assert kern.tile(128, 64, "_r_bwd", True) == (128, 128, 8, 1)
    assert kern.tile(40, 64, "_r_bwd", True) == (64, 64, 4, 1)
    assert kern.tile(64, 64, "_l_bwd", True) == (64, 64, 4, 3)
    assert kern.tile(128, 64, "_l_bwd", True) == (128, 32, 4, 3)
    untimed = kern.tile(128, 64)
    assert untimed[1:3] == (16, 8)
    for name, width, head_dim, timed in [("_r_bwd", 128, 64, False), ("_r_bwd_wide", 128, 64, True),
                                         ("_r_bwd", 128, 128, True), ("_r_fwd", 128, 64, True)]:
        assert kern.tile(width, head_dim, name, timed) == kern.tile(width, head_dim), name


def test_tile_overrides_change_chunks_not_gradients(kern, monkeypatch):
    """``TILE_OVERRIDES`` (what ``bench_backward_tiles.py`` times) changes a kernel's row chunks,
    warps and stages: the gradients stay the reference's (b = 40: chunks of 32 rows leave a partial
    last chunk)."""
    monkeypatch.setattr(kern, "TILE_OVERRIDES", {"_r_bwd": (32, 4, 1), "_l_bwd": (32, 4, 1)})
    assert kern.tile(40, 16, "_r_bwd") == (64, 32, 4, 1)
    assert kern.tile(40, 16, "_r_fwd") == kern.tile(40, 16)
    kern.REPLAYS.clear()
    gen = torch.Generator().manual_seed(5)
    q, k, v, grad = (torch.randn(1, 1, 1600, 16, generator=gen) for _ in range(4))
    got = _grads(q, k, v, None, grad, 40, 1, "post", "triton")[1:]
    want = _grads(q, k, v, None, grad, 40, 1, "post", "torch")[1:]
    for g, w in zip(got, want):
        assert _rel(g, w) < TOL[torch.float32]


def test_options_take_the_reference_gradients(kern):
    """exact_diagonal and global_keys (docs/algorithm.md, section 7) have no backward kernels: on
    Triton, inputs that need grad run on the reference with them (the backward op refuses them)."""
    gen = torch.Generator().manual_seed(9)
    q, k, v, grad = (torch.randn(2, 1, 21, 16, generator=gen) for _ in range(4))
    mask = _mask("right", 2, 21, gen)
    grads = []
    for backend in ("triton", "torch"):
        xs = [x.clone().requires_grad_() for x in (q, k, v)]
        out = ops.monarch_attention(*xs, mask, block_size=4, num_steps=2, backend=backend, exact_diagonal=True,
                                    global_keys=2)
        grads.append(torch.autograd.grad(out, xs, grad))
    for g, w in zip(*grads):
        assert _rel(g, w) < 1e-5
    with pytest.raises(NotImplementedError, match="exact_diagonal"):
        kern.monarch_attention_backward(q, k, v, mask, grad, 4, 2, "post", 0.25, exact_diagonal=True)


def test_empty_inputs_give_empty_gradients():
    for shape in ((2, 3, 0, 8), (0, 3, 5, 8)):
        q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        ops.monarch_attention(q, k, v, block_size=4, backend="triton").sum().backward()
        assert q.grad.shape == shape and v.grad.shape == shape


def _launch_module():
    return importlib.import_module("monarch_convert.kernels.triton.launch")


def _launched(kern, monkeypatch) -> list:
    """Names of the kernels the backward launches from now on, in order."""
    names, launch = [], kern._Bwd.launch
    monkeypatch.setattr(kern._Bwd, "launch", lambda c, kernel, *a, **kw: (names.append(kernel.fn.__name__),
                                                                          launch(c, kernel, *a, **kw)))
    return names


# At T = 1: (B, H, N, d, dv, b, pad, mask, scale, tile); tile: the launcher's MAX_TILE
SAVED_CASES = [
    (2, 2, 37, 16, 16, 5, "post", None, None, 128),
    (3, 2, 37, 16, 24, 5, "pre", "right", None, 128),
    (3, 1, 30, 24, 16, 4, "post", "left", 2.0, 128),  # scale above 1: the forward keeps aL as R @ k
    (2, 1, 40, 16, 16, 6, "pre", "random", None, 128),
    (3, 1, 30, 16, 16, 4, "pre", "empty_row", None, 128),
    (2, 1, 70, 16, 16, 3, "pre", "random", None, 16),  # m = 24 blocks per offset: L statistics first
    (2, 1, 45, 16, 16, 20, "post", "right", None, 16),  # b = 20 keys per block: key tiles
]


@pytest.mark.parametrize("case", SAVED_CASES, ids=_case_id)
def test_backward_reads_what_the_training_forward_kept(kern, monkeypatch, case):
    """At T = 1 the training forward keeps its aL, cL, Y and layout, and the backward launches
    neither the R-step's recomputation nor the layout. The forward computes them in another order
    than that recomputation (base 2, normalised after the product, aL scaled by min(s, 1)), so they
    differ in the last bits (shown here): the gradients are the reference's within the tolerance,
    and the recomputing path's up to rounding; exactly 0 at padding positions."""
    B, H, N, d, dv, b, pad, mask_kind, scale, tile = case
    monkeypatch.setattr(kern, "MAX_TILE", tile)
    gen = torch.Generator().manual_seed(zlib.crc32(_case_id(case).encode()))
    q, k = (torch.randn(B, H, N, d, generator=gen) for _ in range(2))
    v, grad = (torch.randn(B, H, N, dv, generator=gen) for _ in range(2))
    mask = _mask(mask_kind, B, N, gen)
    names = _launched(kern, monkeypatch)
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    out = ops.monarch_attention(*xs, mask, block_size=b, pad_type=pad, backend="triton", scale=scale)
    saved = out.grad_fn.saved_tensors[4]
    assert saved.dtype == torch.uint8 and saved.numel() == _launch_module().saved_bytes(q, v, b, 1, mask is not None)
    got = torch.autograd.grad(out, xs, grad)
    assert names and not [n for n in names if n in ("_r_fwd_kernel", "_r_fwd_wide_kernel", "_layout_kernel")]
    s = scale or d**-0.5
    recomputed = kern.monarch_attention_backward(q, k, v, mask, grad, b, 1, pad, s)
    assert [n for n in names if n.startswith("_r_fwd")]
    want = _grads(q, k, v, mask, grad, b, 1, pad, "torch", scale)[1:]
    for name, g, r, w in zip("qkv", got, recomputed, want):
        assert _rel(g, w) < TOL[torch.float32], (name, _rel(g, w))
        assert _rel(g, r) < TOL[torch.float32], (name, _rel(g, r))
        if mask is not None:
            assert (g.transpose(1, 2)[~mask] == 0).all(), f"d{name} at padding positions"
    _kept_differs_in_the_last_bits(kern, monkeypatch, (q, k, v, mask, grad, b, 1, pad, s), saved)


def _kept_differs_in_the_last_bits(kern, monkeypatch, call: tuple, saved: torch.Tensor) -> None:
    """The forward's kept aL, cL, Y against what the backward recomputes for ``call``, at the blocks
    of each sequence (the others are never written): equal to rounding, not bit for bit."""
    q, _, v, mask, _, b, _, _, s = call
    B, H, N, _ = q.shape
    m = -(-N // b)
    kept = kern._forward_buffers(q, v, b, m, mask is not None, saved)
    bwd = {}
    monkeypatch.setattr(kern, "_walk_back", lambda c, steps: bwd.update(c.buf))
    kern.monarch_attention_backward(*call)
    lengths = torch.full((B,), N) if mask is None else mask.sum(1)
    real = (torch.arange(m)[None, :] < -(-lengths // b)[:, None]).repeat_interleave(H, 0)  # (BH, m)
    scaled = {"ak0": min(s, 1.0), "cl0": 1.0, "y": 1.0}  # the forward keeps aL = min(s, 1) aK
    for name, factor in scaled.items():
        rebuilt = bwd[name].view(B * H, m, b, -1).transpose(1, 2) * factor  # by offset, as the forward's
        got = kept[name].view(B * H, b, m, -1)
        torch.testing.assert_close(got.transpose(1, 2)[real], rebuilt.transpose(1, 2)[real], rtol=1e-5, atol=1e-6)
    assert not torch.equal(kept["ak0"].view(B * H, b, m, -1).transpose(1, 2)[real],
                           (bwd["ak0"].view(B * H, m, b, -1) * min(s, 1.0))[real])


def test_forward_keeps_nothing_where_the_backward_recomputes(kern, monkeypatch):
    """From T = 2 (and with the heads run in chunks) the training forward keeps nothing: the
    backward recomputes, as inference's launches are the same. At T = 1 it keeps aL, Y (d * e each)
    and cL (4 bytes) per token and head, and with a mask the layout (8 bytes per token)."""
    launch, plan = _launch_module(), importlib.import_module("monarch_convert.kernels.triton.plan")
    gen = torch.Generator().manual_seed(3)
    q, k, v, grad = (torch.randn(2, 2, 21, 16, generator=gen) for _ in range(4))
    assert launch.monarch_attention_triton_saving(q, k, v, None, 4, 2, "post", 0.25)[1] is None
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    assert ops.monarch_attention(*xs, block_size=4, num_steps=2, backend="triton").grad_fn.saved_tensors[4] is None
    monkeypatch.setattr(plan, "CHUNK_BYTES", 1024)
    assert launch.saved_bytes(q, v, 4, 1, False) == 0
    assert launch.monarch_attention_triton_saving(q, k, v, None, 4, 1, "post", 0.25)[1] is None
    monkeypatch.undo()
    meta = torch.empty(1, 12, 4096, 64, dtype=torch.float16, device="meta")
    assert launch.saved_bytes(meta, meta, 64, 1, False) == 260 * 12 * 4096
    assert launch.saved_bytes(meta, meta, 64, 1, True) == 260 * 12 * 4096 + 8 * 4096 + 2 * 128
    assert launch.saved_bytes(meta, meta, 64, 2, False) == 0


def test_eager_function_equals_the_training_custom_op():
    """At T = 1 compiled training takes the custom op that keeps the forward's intermediates
    (``monarch_attention_fwd_saving``): the same launches as the eager autograd Function, the same
    output and gradients, bit for bit; its second output is the kept scratch."""
    from monarch_convert.kernels.triton_op import monarch_attention_fwd_saving

    gen = torch.Generator().manual_seed(8)
    q, k, v, grad = (torch.randn(2, 2, 21, 16, generator=gen) for _ in range(4))
    mask = _mask("left", 2, 21, gen)
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    out = ops.monarch_attention(*xs, mask, block_size=4, pad_type="pre", backend="triton")
    ys = [x.clone().requires_grad_() for x in (q, k, v)]
    want, saved = monarch_attention_fwd_saving(*ys, mask, 4, 1, "pre", 16**-0.5)
    assert torch.equal(out, want) and saved.numel() == out.grad_fn.saved_tensors[4].numel()
    for a, b in zip(torch.autograd.grad(out, xs, grad), torch.autograd.grad(want, ys, grad)):
        assert torch.equal(a, b)
