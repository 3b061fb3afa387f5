"""The eager fast path (kernels/triton/replay.py) on the CPU: which arguments a replay puts back.

The kernels themselves need a GPU (tests/gpu checks that replays are bit-identical to launches
through Triton); here fake compiled kernels record what they are launched with."""

from __future__ import annotations

import types

import pytest
import torch

pytest.importorskip("triton")

from monarch_convert.kernels.triton import replay


class FakeCompiled:
    function, packed_metadata = "fn", "meta"

    def __init__(self):
        self.calls = []

    def run(self, g0, g1, g2, stream, function, meta, launch_metadata, enter, exit_, *args):
        self.calls.append((g0, stream, args))


def _recorded_call(mask: bool):
    q, k, v, out = (torch.randn(1, 2, 8, 4) for _ in range(4))
    buffers = {"al": torch.empty(4), "y": torch.empty(4), "cl": torch.empty(4)}
    buffers["summ"] = buffers["al"]
    m = torch.ones(1, 8, dtype=torch.uint8) if mask else None
    a, b = FakeCompiled(), FakeCompiled()
    recording = [(a, 6, [q, k, v, buffers["summ"], buffers["al"], 3, 0.5, True]),
                 (b, 4, [q, buffers["y"], out, m if mask else q, 7])]
    call = types.SimpleNamespace(q=q, k=k, v=v, out=out, mask=m, buffers=buffers, recording=recording)
    scratch = types.SimpleNamespace(offsets={"al": 0, "y": 128, "cl": 256}, nbytes=384)
    return call, scratch, (a, b)


@pytest.mark.parametrize("mask", [False, True])
def test_replay_puts_the_new_call_tensors_and_scratch_pointers_back(monkeypatch, mask):
    monkeypatch.setattr(replay, "current_stream", lambda index: 1234)
    call, scratch, (a, b) = _recorded_call(mask)
    rep = replay.Replay.of(call, scratch)
    assert rep is not None
    # No tensor of the recorded call is kept alive by the replay.
    assert not any(isinstance(x, torch.Tensor) for launch in rep.launches for x in launch.args)
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    key_mask = torch.ones(1, 8, dtype=torch.bool) if mask else None
    out = rep.run(q, k, v, key_mask, None)
    assert out.shape == call.out.shape and out.stride() == call.out.stride()
    (g0, stream, args), = a.calls
    assert (g0, stream) == (6, 1234)
    assert args[:3] == (q.data_ptr(), k.data_ptr(), v.data_ptr()) and args[5:] == (3, 0.5, True)
    base = args[4]
    assert isinstance(base, int) and args[3] == base  # T = 1: the summaries alias aL
    (g0, _, args), = b.calls
    assert g0 == 4 and args[0] == q.data_ptr() and args[1] == base + 128 and args[2] == out.data_ptr()
    assert args[3] == (key_mask if mask else q).data_ptr() and args[4] == 7


def test_unknown_tensor_argument_means_no_replay():
    call, scratch, _ = _recorded_call(False)
    call.recording[0][2].append(torch.zeros(1))
    assert replay.Replay.of(call, scratch) is None


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
