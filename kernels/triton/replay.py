"""Eager calls at a signature seen before skip Triton's Python launcher.

``kernel[grid](...)`` binds ~45 arguments, computes their specialisation key and looks up the
compiled kernel on every launch: about 50 µs of host time per launch (H200 host, triton 3.6),
several times the GPU time of a call at N <= 4096. A call's launches depend only on its signature
(shapes, strides, dtypes, alignment, block size, steps, padding side, scale, device), so the first
call at a signature goes through Triton's launcher and records each launch: the compiled kernel, its
grid and its arguments. Later calls with the same signature relaunch the compiled kernels through
their own launchers, with the call's pointers put back in place of the recorded ones: the same
kernels, the same arguments, the same results.

Every pointer a launch takes is one of the call's tensors (q, k, v, the output, the mask, the one
scratch allocation) plus a fixed byte offset (a chunk of heads, a buffer inside the scratch), so a
replay computes them with one addition each; the launch's other arguments are recorded constants.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from triton import knobs

# Where a launch's pointers come from, in this order: each is (source index, byte offset).
SOURCES = ("q", "k", "v", "out", "mask", "scratch")


def knobs_allow_replay() -> bool:
    """Replays call no launch hooks: with a hook set (a profiler such as proton), launch through
    Triton every time. (Triton 3.5+ keeps hooks in a ``HookChain``, empty by default; older
    versions use None.)"""
    return all(hook is None or not getattr(hook, "calls", True)
               for hook in (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook))


def _aligned(t: torch.Tensor) -> bool:
    """Triton compiles pointers divisible by 16 differently: it is part of the signature."""
    return t.data_ptr() % 16 == 0


def signature(q, k, v, mask, out, b: int, num_steps: int, pad_type: str, scale: float, exact_diagonal: bool = False,
              global_keys: int = 0) -> Optional[tuple]:
    """What decides every launch of a call, or None where the fast path does not apply (a mask on
    another device is copied first, which the recorded launches do not do). The options are part of
    it: a call with other options launches other kernels."""
    if mask is not None and (mask.device != q.device):
        return None
    return (q.shape, q.stride(), k.stride(), v.shape[-1], v.stride(), q.dtype, q.device.index,
            None if mask is None else mask.stride(), None if out is None else out.stride(),
            b, num_steps, pad_type, scale, _aligned(q), _aligned(k), _aligned(v),
            mask is None or _aligned(mask), out is None or _aligned(out), exact_diagonal, global_keys)


def placed_in(buffers, base: torch.Tensor, source: int) -> dict[int, tuple[int, int]]:
    """``pointer_of``'s entries for views of ``base`` (source index ``source``): tensor id ->
    (source, byte offset). An empty view (e.g. no spare rows) has data_ptr 0 and is never read:
    offset 0, not ``-base.data_ptr()``, which a replay turned into a negative address."""
    start = base.data_ptr()
    return {id(t): (source, t.data_ptr() - start if t.numel() else 0) for t in buffers}


def current_stream(device_index: int) -> int:
    """The raw CUDA stream the caller's work goes to (what Triton's launcher would use)."""
    return torch._C._cuda_getCurrentRawStream(device_index)


def _entry(compiled) -> tuple[Callable, tuple]:
    """(function to call, arguments between the stream and the kernel's own) for launching
    ``compiled``. Triton 3.6's launcher object only allocates its (empty) scratch spaces in Python
    before calling its C entry point, so where both are empty the entry point is called directly;
    otherwise the launcher, with no launch hooks (``knobs_allow_replay``)."""
    run = compiled.run
    params = list(inspect.signature(type(run).__call__).parameters)
    if (params == ["self", "gridX", "gridY", "gridZ", "stream", "function", "args"] and hasattr(run, "launch")
            and getattr(run, "global_scratch_size", 1) == 0 and getattr(run, "profile_scratch_size", 1) == 0):
        return run.launch, (compiled.function, run.launch_cooperative_grid, run.launch_pdl, None, None,
                            compiled.packed_metadata, None, None, None)
    return run, (compiled.function, compiled.packed_metadata, None, None, None)


@dataclass
class _Launch:
    fn: Callable
    grid: int
    mid: tuple  # arguments between the stream and the kernel's
    lead: Callable  # the call's pointer list -> this launch's leading pointer arguments (a tuple)
    tail: tuple  # the kernel's arguments after them (None where a later pointer goes)
    late: tuple  # (position in tail, index in the call's pointer list) of the later pointers

    def __call__(self, pointers: list, stream: int) -> None:
        tail = self.tail
        if self.late:
            tail = list(tail)
            for i, j in self.late:
                tail[i] = pointers[j]
        self.fn(self.grid, 1, 1, stream, *self.mid, *self.lead(pointers), *tail)


def _getter(indices: list[int]) -> Callable:
    if len(indices) < 2:
        return lambda xs, at=tuple(indices): tuple(xs[i] for i in at)
    return operator.itemgetter(*indices)


def record(recording: list, pointer_of: Callable) -> Optional[tuple[list, tuple]]:
    """(launches, pointers) of a recording of ``(compiled kernel, grid, arguments)``: each launch
    with the indices of its pointers in ``pointers``, the (source index, byte offset) of every
    distinct pointer the launches take (``pointer_of`` says where a tensor lies); None if a launch
    takes a tensor ``pointer_of`` does not know."""
    pointers: dict[tuple, int] = {}
    launches = []
    for compiled, grid, args in recording:
        lead = next((i for i, a in enumerate(args) if not isinstance(a, torch.Tensor)), len(args))
        where = [(i, pointer_of(a)) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if any(w is None for _, w in where):
            return None
        index = [pointers.setdefault(w, len(pointers)) for _, w in where]
        late = tuple((i - lead, j) for (i, _), j in zip(where[lead:], index[lead:]))
        tail = tuple(None if isinstance(a, torch.Tensor) else a for a in args[lead:])
        fn, mid = _entry(compiled)
        launches.append(_Launch(fn, grid, mid, _getter(index[:lead]), tail, late))
    return launches, tuple(pointers)


def relaunch(launches: list, pointers: tuple, sources: tuple, stream: int) -> None:
    """The recorded launches on the call's sources (plain int addresses: the launchers take them as
    they are, where a tensor costs them a data_ptr() call per argument per launch)."""
    at = [sources[s] + offset for s, offset in pointers]
    for launch in launches:
        launch(at, stream)


@dataclass
class Replay:
    """The recorded launches of one forward signature (sources: ``SOURCES``). ``saves``: the
    scratch holds what the backward reads (``launch.saved_bytes``), which a training call keeps."""

    launches: list
    pointers: tuple  # (source index, byte offset) of every distinct pointer the launches take
    out_size: tuple
    out_stride: tuple
    scratch_bytes: int
    dtype: torch.dtype
    device: torch.device
    saves: bool = False

    @classmethod
    def of(cls, call) -> Optional["Replay"]:
        """From a call that recorded its launches (``launch._Call``: ``recording``, ``pointer_of``
        and ``saves``); None if a launch takes a tensor this module cannot put back."""
        recorded = record(call.recording, call.pointer_of)
        if recorded is None:
            return None
        out = call.out
        return cls(*recorded, tuple(out.shape), out.stride(), call.scratch_bytes, out.dtype, out.device, call.saves)

    def run(self, q, k, v, mask, out=None) -> torch.Tensor:
        return self.run_at(q.data_ptr(), k.data_ptr(), v.data_ptr(), 0 if mask is None else mask.data_ptr(), out)

    def run_at(self, q: int, k: int, v: int, mask: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The launches on inputs at these addresses (``mask``: 0 without one)."""
        out = self._output(out)
        stream = current_stream(self.device.index)
        scratch = alloc(self.scratch_bytes, stream, self.device)
        relaunch(self.launches, self.pointers, (q, k, v, out.data_ptr(), mask, address(scratch)), stream)
        free(scratch)  # in stream order: later work on this stream may reuse it
        return out

    def run_keeping(self, q, k, v, mask, out=None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``run`` for training: (output, the scratch) where it holds what the backward reads
        (``saves``), a tensor kept until the backward; (output, None) elsewhere."""
        if not self.saves:
            return self.run(q, k, v, mask, out), None
        out = self._output(out)
        scratch = torch.empty(self.scratch_bytes, dtype=torch.uint8, device=self.device)
        sources = (q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), 0 if mask is None else mask.data_ptr(),
                   scratch.data_ptr())
        relaunch(self.launches, self.pointers, sources, current_stream(self.device.index))
        return out, scratch

    def _output(self, out: Optional[torch.Tensor]) -> torch.Tensor:
        if out is None:
            out = torch.empty_strided(self.out_size, self.out_stride, dtype=self.dtype, device=self.device)
        return out


def alloc(nbytes: int, stream: int, device: torch.device):
    """Scratch from PyTorch's caching allocator on ``stream`` (its graph pool under CUDA-graph
    capture, as for any tensor): a raw pointer, no tensor made for it, where the device is the
    current one (the raw allocator's); else a tensor on ``device``. None asked (the on-chip
    kernel's calls): the address 0, which no launch reads."""
    if nbytes == 0:
        return 0
    if torch._C._cuda_getDevice() == device.index:
        return torch._C._cuda_cudaCachingAllocator_raw_alloc(nbytes, stream)
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


def address(scratch) -> int:
    return scratch if isinstance(scratch, int) else scratch.data_ptr()


def free(scratch) -> None:
    if isinstance(scratch, int) and scratch:
        torch._C._cuda_cudaCachingAllocator_raw_delete(scratch)

