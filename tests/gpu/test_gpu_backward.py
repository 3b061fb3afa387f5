"""The Triton backward kernels on a CUDA GPU at realistic sizes, against the reference's autograd run
in float32 on the same (rounded) inputs; compiled training steps, CUDA graphs, and memory that
grows like N.

Run on the GPU machine: ``pytest -m gpu tests/gpu``.
"""

from __future__ import annotations

import pytest
import torch

from monarch_convert.kernels.triton.plan import Knobs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    pytest.importorskip("triton")
    import triton.language as tl

    if "Interpreted" in type(tl.zeros).__name__:
        pytest.skip("TRITON_INTERPRET=1 is set: the GPU tests need compiled kernels")


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(B, H, N, d, dtype, strided, mask_kind, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def make():
        if strided:  # what transformers passes: (B, N, H, d) transposed
            return torch.randn(B, N, H, d, device="cuda", generator=g, dtype=dtype).transpose(1, 2)
        return torch.randn(B, H, N, d, device="cuda", generator=g, dtype=dtype)

    q, k, v, grad = make(), make(), make(), make()
    mask = None
    if mask_kind is not None:
        lengths = torch.randint(1, N + 1, (B,), device="cuda", generator=g)
        lengths[0] = N
        pos = torch.arange(N, device="cuda")
        mask = pos[None] < lengths[:, None] if mask_kind == "right" else pos[None] >= (N - lengths)[:, None]
    return q, k, v, grad, mask


def _grads(q, k, v, grad, mask, b, T, pad, backend):
    from monarch_convert.kernels.ops import monarch_attention

    if backend == "torch":
        q, k, v, grad = (x.float() for x in (q, k, v, grad))
    xs = [x.detach().requires_grad_() for x in (q, k, v)]
    out = monarch_attention(*xs, mask, block_size=b, num_steps=T, pad_type=pad, backend=backend)
    return torch.autograd.grad(out, xs, grad)


# (B, H, N, d, b, T, pad, mask, strided)
SHAPES = {
    "bert-base": (8, 12, 512, 64, 23, 1, "post", "right", True),
    "bert-base-T2": (8, 12, 512, 64, 23, 2, "post", "right", True),
    "vit-b-T3": (32, 12, 197, 64, 14, 3, "pre", None, True),
    "n4096": (2, 12, 4096, 64, 64, 1, "pre", "left", False),
    "n16384": (1, 12, 16384, 64, 128, 1, "post", None, False),
    "n16384-T2": (1, 12, 16384, 64, 128, 2, "pre", "right", False),
    "d128": (2, 8, 1000, 128, 32, 2, "post", "right", False),
    "n8192-b32": (1, 12, 8192, 64, 32, 2, "pre", "left", False),  # m = 256: tiles of blocks, statistics first
    "n4096-b256": (1, 4, 4096, 64, 256, 1, "post", "right", False),  # blocks longer than a tile: key tiles
    "n8192-b32-T1": (1, 12, 8192, 64, 32, 1, "post", "right", False),
    "n256-fused": (64, 12, 256, 64, 16, 1, "pre", "left", True),  # the forward's one-program-per-head kernel
}
CASES = [(name, torch.float16) for name in SHAPES] + [
    (name, torch.bfloat16) for name in ("bert-base", "n16384", "n16384-T2", "n8192-b32", "n4096-b256")
] + [(name, torch.float32) for name in ("bert-base-T2", "d128")]


@pytest.mark.parametrize("name,dtype", CASES, ids=lambda x: str(x).replace("torch.", ""))
def test_gradients_match_reference(name, dtype):
    B, H, N, d, b, T, pad, mask_kind, strided = SHAPES[name]
    q, k, v, grad, mask = _inputs(B, H, N, d, dtype, strided, mask_kind)
    got = _grads(q, k, v, grad, mask, b, T, pad, "triton")
    want = _grads(q, k, v, grad, mask, b, T, pad, "torch")
    for x, g, w in zip("qkv", got, want):
        assert g.dtype == dtype and torch.isfinite(g).all(), x
        assert _rel(g, w) < TOL[dtype], (x, _rel(g, w))
        if mask is not None:
            assert (g.transpose(1, 2)[~mask] == 0).all(), x


class _Attention(torch.nn.Module):
    def __init__(self, width=768, heads=12, block=64, steps=1):
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.heads, self.block, self.steps = heads, block, steps

    def forward(self, x, mask):
        from monarch_convert.kernels.ops import monarch_attention

        B, N, W = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        z = monarch_attention(q, k, v, mask, block_size=self.block, num_steps=self.steps)
        return self.out(z.transpose(1, 2).reshape(B, N, W))


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_step(mode):
    """A training step's forward compiled with inductor (and with CUDA graphs), its backward by AOT
    autograd: the custom ops trace without a graph break, and the parameters' gradients are those
    of eager mode."""
    torch.manual_seed(0)
    model = _Attention().cuda().half()
    x = torch.randn(2, 2048, 768, device="cuda", dtype=torch.float16)
    mask = torch.ones(2, 2048, dtype=torch.bool, device="cuda")
    mask[1, 1500:] = False

    def loss(x, mask):
        return model(x, mask).float().square().mean()

    grads = []
    torch._dynamo.reset()
    for fn in (loss, torch.compile(loss, fullgraph=True, mode=None if mode == "default" else mode)):
        for _ in range(3):  # warm-up, then (reduce-overhead) graph replays of forward and backward
            model.zero_grad(set_to_none=False)
            fn(x, mask).backward()
        grads.append([p.grad.float().clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert _rel(b, a) < 1e-2


def _peak_mib(N, T):
    """Memory allocated during one forward + backward beyond its inputs (b = sqrt(N), 12 heads)."""
    q, k, v, grad, _ = _inputs(1, 12, N, 64, torch.float16, False, None)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _grads(q, k, v, grad, None, int(N**0.5), T, "post", "triton")
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


@pytest.mark.parametrize("T", [1, 2])
def test_memory_grows_like_n(T):
    """O(N d) per head: four times the tokens, about four times the memory (an O(N b) or O(N m)
    intermediate would make it eight)."""
    small, large = _peak_mib(4096, T), _peak_mib(16384, T)
    assert large / small < 5, (small, large)


def _kept(q, k, v, mask, b, T, pad, scale, keep: bool):
    """What a training forward keeps for the backward (None where ``keep`` is off)."""
    from monarch_convert.kernels.triton import launch

    return launch.monarch_attention_triton_saving(q, k, v, mask, b, T, pad, scale)[1] if keep else None


@pytest.mark.parametrize("name,keep", [("bert-base-T2", False), ("n4096", False), ("n16384", False),
                                       ("bert-base", True), ("n4096", True), ("n16384", True)])
def test_backward_replay_equals_a_launch_bit_for_bit(name, keep):
    """The first call at a signature records the backward's launches; a later call with other
    tensors replays them: the same gradients, bit for bit, as launching through Triton (keep: from
    the training forward's kept intermediates, whose replay is recorded apart)."""
    from monarch_convert.kernels.triton import backward_launch as bl

    B, H, N, d, b, T, pad, mask_kind, strided = SHAPES[name]
    first = _inputs(B, H, N, d, torch.float16, strided, mask_kind, seed=1)
    q, k, v, grad, mask = _inputs(B, H, N, d, torch.float16, strided, mask_kind, seed=2)
    mask = first[4] if mask_kind else None  # the same lengths: one signature, other values
    scale = d**-0.5
    bl.REPLAYS.clear()
    bl.monarch_attention_backward(*first[:3], mask, first[3], b, T, pad, scale,
                                  saved=_kept(*first[:3], mask, b, T, pad, scale, keep))
    assert len(bl.REPLAYS) == 1
    saved = _kept(q, k, v, mask, b, T, pad, scale, keep)
    replayed = bl.monarch_attention_backward(q, k, v, mask, grad, b, T, pad, scale, saved=saved)
    assert len(bl.REPLAYS) == 1
    if keep:  # the recomputing call at this signature is not the kept one's replay
        bl.monarch_attention_backward(q, k, v, mask, grad, b, T, pad, scale)
        assert len(bl.REPLAYS) == 2
    bl.REPLAYS.clear()
    launched = bl.monarch_attention_backward(q, k, v, mask, grad, b, T, pad, scale, saved=saved)
    for x, r, w in zip("qkv", replayed, launched):
        assert torch.equal(r, w), x


KEPT = [(name, torch.float16) for name in ("bert-base", "n4096", "n16384", "n4096-b256", "n8192-b32-T1",
                                            "n256-fused")] + [
    (name, torch.bfloat16) for name in ("bert-base", "n16384", "n8192-b32-T1")]


@pytest.mark.parametrize("name,dtype", KEPT, ids=lambda x: str(x).replace("torch.", ""))
def test_backward_from_the_kept_forward(name, dtype):
    """At T = 1 the training forward keeps aL, cL, Y and the layout, and the backward reads them in
    place of its recomputation. They are computed in another order than the recomputation's (not
    bit for bit the same), so the gradients equal the reference's within the tolerance and the
    recomputing backward's to rounding."""
    from monarch_convert.kernels.triton import backward_launch as bl
    from monarch_convert.kernels.triton import launch

    B, H, N, d, b, T, pad, mask_kind, strided = SHAPES[name]
    q, k, v, grad, mask = _inputs(B, H, N, d, dtype, strided, mask_kind)
    mode = launch.plan_for(q, v, b, T).mode  # a training call's (never the on-chip kernel's)
    assert (mode == "fused") == (name == "n256-fused")
    out, saved = launch.monarch_attention_triton_saving(q, k, v, mask, b, T, pad, d**-0.5)
    # The launches of an inference call in that mode (where the on-chip kernel is the default, one at N = 256 runs it).
    assert torch.equal(out, launch.monarch_attention_triton(q, k, v, mask, b, T, pad, d**-0.5, knobs=Knobs(mode=mode)))
    assert saved.numel() == launch.saved_bytes(q, v, b, T, mask is not None)
    got = bl.monarch_attention_backward(q, k, v, mask, grad, b, T, pad, d**-0.5, saved=saved)
    recomputed = bl.monarch_attention_backward(q, k, v, mask, grad, b, T, pad, d**-0.5)
    want = _grads(q, k, v, grad, mask, b, T, pad, "torch")
    for x, g, r, w in zip("qkv", got, recomputed, want):
        assert g.dtype == dtype and torch.isfinite(g).all(), x
        assert _rel(g, w) < TOL[dtype], (x, _rel(g, w))
        assert _rel(g, r) < TOL[dtype], (x, _rel(g, r))
        if mask is not None:
            assert (g.transpose(1, 2)[~mask] == 0).all(), x


def _held_mib(call) -> tuple:
    """(result of ``call``, MiB it leaves allocated beyond its output)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = call()
    return out, (torch.cuda.memory_allocated() - before - out.untyped_storage().nbytes()) / 2**20


def test_training_forward_keeps_its_scratch_and_inference_nothing():
    """Beyond its output, an inference call holds no memory after it returns; a training call at
    T = 1 holds its scratch (``launch.saved_bytes``, 24.4 MiB here) until the backward, and nothing
    at T = 2. (Up to the caching allocator's rounding of a block: under 2 MiB.)"""
    from monarch_convert.kernels.ops import monarch_attention
    from monarch_convert.kernels.triton import launch

    q, k, v, _, mask = _inputs(2, 12, 4096, 64, torch.float16, False, "right")
    xs = [x.detach().requires_grad_() for x in (q, k, v)]
    for T in (1, 2):
        kept = launch.saved_bytes(q, v, 64, T, True) / 2**20
        assert (kept > 24) == (T == 1)
        for _ in range(2):  # recorded, then replayed
            with torch.no_grad():
                out, held = _held_mib(lambda: monarch_attention(*xs, mask, block_size=64, num_steps=T))
            assert 0 <= held < 2, held
            del out
            out, held = _held_mib(lambda: monarch_attention(*xs, mask, block_size=64, num_steps=T))
            saved = out.grad_fn.saved_tensors[4]
            assert (saved is None) == (T == 2) and (T == 2 or saved.numel() == kept * 2**20)
            assert kept <= held < kept + 2, (held, kept)
            del out, saved


def test_training_after_inference_at_n256_keeps_its_own_launches(monkeypatch):
    """Inference at N = 256 runs the on-chip kernel (nothing in memory) where it is the default;
    training calls at the same shapes after it, eager (recorded, then replayed) and compiled, run
    their own launches, keep aL, cL, Y for the backward and get the reference's gradients."""
    from monarch_convert.kernels.ops import monarch_attention
    from monarch_convert.kernels.triton import launch, plan

    monkeypatch.setattr(plan, "ONCHIP_BY_DEFAULT", True)
    q, k, v, grad, mask = _inputs(64, 12, 256, 64, torch.float16, True, "right")
    launch.REPLAYS.clear()
    with torch.no_grad():
        for _ in range(2):  # recorded, then replayed
            inference = monarch_attention(q, k, v, mask, block_size=16)
    xs = [x.detach().requires_grad_() for x in (q, k, v)]
    want = _grads(q, k, v, grad, mask, 16, 1, "post", "torch")

    def eager(q, k, v):
        return monarch_attention(q, k, v, mask, block_size=16)

    torch._dynamo.reset()
    compiled = torch.compile(eager, fullgraph=True)
    for fn in (eager, eager, compiled):
        out = fn(*xs)
        if fn is eager:  # the autograd Function's saved tensors: q, k, v, the mask, the kept scratch
            assert out.grad_fn.saved_tensors[4].numel() == launch.saved_bytes(q, v, 16, 1, True)
        torch.testing.assert_close(out, inference, rtol=2e-3, atol=2e-3)
        got = torch.autograd.grad(out, xs, grad)
        for x, g, w in zip("qkv", got, want):
            assert _rel(g, w) < TOL[torch.float16], (x, _rel(g, w))


@pytest.mark.parametrize("T", [1, 2])
def test_eager_function_equals_the_custom_op_bit_for_bit(T):
    """Eager training goes through the autograd Function (``triton_function.py``), compiled
    training through the custom ops (the one keeping the forward's intermediates): the same
    launchers, the same gradients."""
    from monarch_convert.kernels.triton_op import monarch_attention_fwd_saving

    q, k, v, grad, mask = _inputs(2, 12, 2048, 64, torch.float16, True, "right")
    got = _grads(q, k, v, grad, mask, 46, T, "post", "triton")
    xs = [x.detach().requires_grad_() for x in (q, k, v)]
    want = torch.autograd.grad(monarch_attention_fwd_saving(*xs, mask, 46, T, "post", 0.125)[0], xs, grad)
    for x, g, w in zip("qkv", got, want):
        assert torch.equal(g, w), x


@pytest.mark.parametrize("mask_kind", [None, "right"])
def test_forward_and_backward_captured_in_a_cuda_graph(mask_kind):
    """Forward + backward of eager code captured in a CUDA graph (replayed launches, scratch from
    the graph's pool): replays on new input values give eager's gradients, bit for bit."""
    from monarch_convert.kernels.ops import monarch_attention

    static = _inputs(1, 12, 4096, 64, torch.float16, False, mask_kind, seed=3)
    xs = [x.detach().requires_grad_() for x in static[:3]]
    grad, mask = static[3], static[4]

    def step():
        return torch.autograd.grad(monarch_attention(*xs, mask, block_size=64), xs, grad)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    new = _inputs(1, 12, 4096, 64, torch.float16, False, mask_kind, seed=4)
    for x, y in zip(xs + [grad], new[:4]):
        x.data.copy_(y)
    graph.replay()
    want = step()
    for x, g, w in zip("qkv", captured, want):
        assert torch.equal(g, w), x
