"""The eager fast path (kernels/triton/replay.py) on the CPU: which arguments a replay puts back.

The kernels themselves need a GPU (tests/gpu checks that replays are bit-identical to launches
through Triton); here fake compiled kernels record what they are launched with."""

from __future__ import annotations

import types

import pytest
import torch

pytest.importorskip("triton")

from monarch_convert.kernels.triton import replay

ALLOC, FREE = replay.alloc, replay.free  # before the fixture below replaces them


@pytest.fixture(autouse=True)
def fake_scratch(monkeypatch):
    """Scratch at a made-up address (the real one comes from PyTorch's CUDA allocator)."""
    monkeypatch.setattr(replay, "alloc", lambda nbytes, stream, device: 1 << 20)
    monkeypatch.setattr(replay, "free", lambda ptr: None)


class FakeCompiled:
    """A compiled kernel whose launcher takes the hooks' arguments (the generic path)."""

    function, packed_metadata = "fn", "meta"

    def __init__(self):
        self.calls = []

    def run(self, g0, g1, g2, stream, function, meta, launch_metadata, enter, exit_, *args):
        self.calls.append((g0, stream, args))


class Triton36Launcher:
    """Triton 3.6's launcher object: Python around a C entry point (``launch``)."""

    global_scratch_size = profile_scratch_size = 0
    launch_cooperative_grid, launch_pdl = False, True

    def __init__(self):
        self.calls = []

    def __call__(self, gridX, gridY, gridZ, stream, function, *args):
        raise AssertionError("the replay calls the entry point directly")

    def launch(self, *args):
        self.calls.append(args)


def _recorded_call(mask: bool, compiled=None):
    q, k, v, out = (torch.randn(1, 2, 8, 4) for _ in range(4))
    scratch = torch.empty(384, dtype=torch.uint8)
    al, y = scratch[:128], scratch[128:256]
    m = torch.ones(1, 8, dtype=torch.uint8) if mask else None
    q_head1 = q[:, 1:]  # a chunk of heads: q plus a byte offset
    where = {id(q): (0, 0), id(k): (1, 0), id(v): (2, 0), id(out): (3, 0), id(al): (5, 0), id(y): (5, 128),
             id(q_head1): (0, q_head1.data_ptr() - q.data_ptr())}
    if mask:
        where[id(m)] = (4, 0)
    a, b = compiled or (FakeCompiled(), FakeCompiled())
    recording = [(a, 6, [q, k, v, al, al, 3, 0.5, True]), (b, 4, [q_head1, y, out, m if mask else q, 7])]
    call = types.SimpleNamespace(out=out, recording=recording, scratch_bytes=384,
                                 pointer_of=lambda t: where.get(id(t)), keep=q_head1, saves=False)
    return call, (a, b)


@pytest.mark.parametrize("mask", [False, True])
def test_replay_puts_the_new_call_pointers_back(monkeypatch, mask):
    monkeypatch.setattr(replay, "current_stream", lambda index: 1234)
    call, (a, b) = _recorded_call(mask)
    rep = replay.Replay.of(call)
    assert rep is not None
    # No tensor of the recorded call is kept alive by the replay.
    assert not any(isinstance(x, torch.Tensor) for launch in rep.launches for x in launch.tail)
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    key_mask = torch.ones(1, 8, dtype=torch.bool) if mask else None
    out = rep.run(q, k, v, key_mask)
    assert out.shape == call.out.shape and out.stride() == call.out.stride()
    (g0, stream, args), = a.calls
    assert (g0, stream) == (6, 1234)
    assert args[:3] == (q.data_ptr(), k.data_ptr(), v.data_ptr()) and args[5:] == (3, 0.5, True)
    base = args[3]
    assert base == 1 << 20 and args[4] == base
    (g0, _, args), = b.calls
    assert g0 == 4 and args[0] == q[:, 1:].data_ptr() and args[1] == base + 128 and args[2] == out.data_ptr()
    assert args[3] == (key_mask if mask else q).data_ptr() and args[4] == 7


@pytest.mark.parametrize("saves", [False, True])
def test_training_replay_keeps_the_scratch_where_it_saves(monkeypatch, saves):
    """A training call's replay (``run_keeping``) launches the same kernels into a scratch tensor that
    it returns, where the signature's scratch holds what the backward reads; elsewhere it frees the
    scratch as inference does and returns None."""
    monkeypatch.setattr(replay, "current_stream", lambda index: 1234)
    call, (a, b) = _recorded_call(False)
    call.saves = saves
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    out, kept = replay.Replay.of(call).run_keeping(q, k, v, None)
    (_, _, args), = a.calls
    (_, _, later), = b.calls
    if not saves:
        assert kept is None and args[3] == 1 << 20  # the allocator's (freed) scratch
        return
    assert kept.dtype == torch.uint8 and kept.numel() == 384
    assert args[3] == args[4] == kept.data_ptr() and later[1] == kept.data_ptr() + 128
    assert later[2] == out.data_ptr()


def test_triton_36_launchers_are_called_at_their_entry_point(monkeypatch):
    monkeypatch.setattr(replay, "current_stream", lambda index: 99)
    launchers = (Triton36Launcher(), Triton36Launcher())
    compiled = tuple(types.SimpleNamespace(run=r, function="fn", packed_metadata="meta") for r in launchers)
    call, _ = _recorded_call(False, compiled)
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    replay.Replay.of(call).run(q, k, v, None)
    (args,), _ = (r.calls for r in launchers)
    assert args[:13] == (6, 1, 1, 99, "fn", False, True, None, None, "meta", None, None, None)
    assert args[13:16] == (q.data_ptr(), k.data_ptr(), v.data_ptr()) and args[18:] == (3, 0.5, True)


def test_no_scratch_asked_allocates_none():
    """The on-chip kernel's calls take no scratch: a replay passes the address 0 and frees nothing."""
    assert ALLOC(0, 1234, torch.device("cuda", 0)) == 0
    FREE(0)


def test_buffers_are_placed_at_their_offsets_and_an_empty_one_at_zero():
    """An empty view's data_ptr is 0: placed at offset 0 of its source, never at -base (a replay
    turned that into a negative address: OverflowError on an H100)."""
    buf = torch.empty(256, dtype=torch.uint8)
    views = [buf[0:0].view(torch.float16), buf[128:192].view(torch.float32), buf[0:64]]
    assert views[0].data_ptr() == 0
    assert list(replay.placed_in(views, buf, 5).values()) == [(5, 0), (5, 128), (5, 0)]


def test_unknown_tensor_argument_means_no_replay():
    call, _ = _recorded_call(False)
    call.recording[0][2].insert(0, torch.zeros(1))
    assert replay.Replay.of(call) is None


def test_pointers_after_constants_are_put_back(monkeypatch):
    monkeypatch.setattr(replay, "current_stream", lambda index: 1234)
    call, (a, _) = _recorded_call(False)
    call.recording[0][2].append(call.out)
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    out = replay.Replay.of(call).run(q, k, v, None)
    (_, _, args), = a.calls
    assert args[:3] == (q.data_ptr(), k.data_ptr(), v.data_ptr()) and args[5:8] == (3, 0.5, True)
    assert args[8] == out.data_ptr() and len(args) == 9


def test_signature_tells_apart_what_the_kernels_are_compiled_for():
    q = torch.randn(2, 3, 16, 8)
    base = dict(mask=None, out=None, b=4, num_steps=1, pad_type="post", scale=0.5)
    one = replay.signature(q, q, q, **base)
    assert one == replay.signature(q.clone(), q.clone(), q.clone(), **base)
    assert one != replay.signature(q.transpose(1, 2).contiguous().transpose(1, 2), q, q, **base)  # strides
    assert one != replay.signature(q, q, q, **{**base, "num_steps": 2})
    assert one != replay.signature(q, q, q, **{**base, "scale": 0.25})
    shifted = torch.randn(q.numel() + 1)[1:].view(q.shape)  # same strides, pointer not divisible by 16
    assert shifted.stride() == q.stride() and shifted.data_ptr() % 16
    assert one != replay.signature(shifted, q, q, **base)
    assert one != replay.signature(q, q, q, **{**base, "mask": torch.ones(2, 16, dtype=torch.bool)})
    # The op's options launch other kernels: a replay recorded without them never serves them.
    assert one != replay.signature(q, q, q, **base, exact_diagonal=True)
    assert one != replay.signature(q, q, q, **base, global_keys=4)
    assert replay.signature(q, q, q, **base, global_keys=4) != replay.signature(q, q, q, **base, global_keys=5)


@pytest.mark.parametrize("inference_too", [False, True])
def test_eager_training_replays_forward_and_backward(monkeypatch, inference_too):
    """An eager call that needs grad at a key run on Triton before: no validation, no launcher; the
    autograd Function replays the forward under the entry point's key kept apart for training calls
    (``launch.saving_key``), and the backward under that key and the output gradient's layout; an
    inference call's replay at the same key, if any, is not run."""
    from monarch_convert.kernels import ops
    from monarch_convert.kernels.triton import backward_launch

    ops._launcher()
    xs = [torch.randn(1, 2, 8, 4).requires_grad_() for _ in range(3)]
    grad = torch.randn(1, 2, 8, 4)
    key, out = ops._replayed(*xs, None, 4, 1, "post", None, "triton", False, 0)
    assert key is not None and out is None
    calls = []

    kept = torch.zeros(16, dtype=torch.uint8)

    class Forward:
        def run_keeping(self, q, k, v, mask):
            calls.append(("fwd", q is xs[0], mask))
            return torch.full((1, 2, 8, 4), 2.0), kept

    class Backward:
        def run(self, q, k, v, mask, grad_out, saved):
            calls.append(("bwd", q is xs[0], grad_out is grad, saved is kept))
            return tuple(torch.full((1, 2, 8, 4), float(i)) for i in range(3))

    def refuse(*args):
        raise AssertionError("a replayed key is not validated again")

    class Inference:  # an inference call's replay at the same key (maybe the on-chip kernel's: no scratch)
        def run_keeping(self, q, k, v, mask):
            raise AssertionError("a training call runs its own replay")

    if inference_too:
        monkeypatch.setitem(ops._LAUNCH_MODULE.REPLAYS, key, Inference())
    monkeypatch.setitem(ops._LAUNCH_MODULE.REPLAYS, ops._LAUNCH_MODULE.saving_key(key), Forward())
    monkeypatch.setitem(backward_launch.REPLAYS, (key, grad.stride(), grad.dtype, True, True), Backward())
    monkeypatch.setattr(ops, "_validate", refuse)
    out = ops.monarch_attention(*xs, block_size=4, backend="triton")
    assert (out == 2).all()
    grads = torch.autograd.grad(out, xs, grad)
    assert calls == [("fwd", True, None), ("bwd", True, True, True)]
    assert all((g == i).all() for i, g in enumerate(grads))
