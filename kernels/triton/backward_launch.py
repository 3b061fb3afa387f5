"""The backward launcher: gradients of q, k, v from the output's gradient (docs/algorithm.md,
section 9), by recomputation from q, k, v and the key-padding mask, or at T = 1 from what the
training forward kept (``saved``: ``launch.monarch_attention_triton_saving``).

First the forward is rebuilt step by step (``aK, cL`` of every step, the summaries and ``cR`` of
steps 2..T, ``Y`` of the last; with ``saved``, nothing: the forward's ``aL, cL, Y`` and sequence
layout are read where they lie, ``_forward_buffers``), then walked back: the output stage and the
last R-step, then for each earlier step its summary stage and its R-step. dq's L-stage parts (and dk's parts of steps
T..2) accumulate in float32; the program that adds a gradient's last part writes it in the input
dtype, so there is no zero-filling nor casting pass (padding positions, which no program writes,
are zeroed by one launch where there is a mask). All intermediates lie in one scratch allocation.
No host sync.

Like the forward's eager path (``replay.py``), the first call at a signature (shapes, strides,
dtypes, alignment of q, k, v, the mask and the output's gradient, block size, steps, padding side,
scale, whether the forward's intermediates are given) records its launches; later calls relaunch
the compiled kernels with their own pointers: no argument binding, no tensor made but the three
gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..layout import capped_block_size
from .launch import INTERPRETED, Scratch, device_info
from .layout_kernel import _layout_kernel
from .plan import pow2
from .replay import address, alloc, current_stream, free, knobs_allow_replay, placed_in, record, relaunch, signature

# A whole block (b keys) is one tile of an R-program up to 128 (N up to 16384 at b = sqrt(N)), and
# tiles of 128 beyond; an L-program's m blocks likewise.
MAX_TILE = 128
# Where a backward launch's pointers come from (``replay.record``'s source indices).
SOURCES = ("q", "k", "v", "mask", "grad_out", "dq", "dk", "dv", "scratch", "saved")
REPLAYS: dict = {}
_MAX_REPLAYS = 512
# Elements per program of the zeroing and casting launches.
_FLAT = 4096
# Triton's default software-pipelining depth on CUDA.
_STAGES = 3


# (rows per chunk, warps, pipeline stages) by kernel ("_r_fwd", "_r_bwd", "_l_fwd", "_l_bwd",
# "_l_stats") that replace ``tile``'s choice: set by ``bench_backward_tiles.py`` to time other
# configurations (clear ``REPLAYS`` after changing it). Empty: the defaults below.
TILE_OVERRIDES: dict = {}


def tile(width: int, head_dim: int, kernel: str = "", timed: bool = False) -> tuple[int, int, int, int]:
    """(tile width, rows per chunk, warps, stages) of a program whose tile spans ``width`` keys
    (R-programs: b) or blocks (L-programs: m) at head dim ``head_dim``; ``kernel`` is the program's
    name (``_r_bwd``, ``_l_bwd``, ...; ``_wide`` appended for blocks longer than MAX_TILE). ``timed``:
    16-bit inputs on Hopper or later (or the interpreter), where the choices below were timed; they
    take up to 144 KiB of shared memory (``kernel_resources.py --backward``), more than older GPUs
    give a program, and float32 tiles twice the registers."""
    full = max(16, pow2(width))
    override = TILE_OVERRIDES.get(kernel.removesuffix("_wide"))
    if override is not None:
        rows, warps, stages = override
        return full, min(rows, full), warps, stages
    if timed and head_dim <= 64:
        if kernel == "_r_bwd":
            # H100, float16, d = 64, b = m = 32 / 64 / 128 (bench_backward_tiles.py, code b5ff63c): a
            # whole block per chunk, 4 warps up to b = 64 (12.2 / 40.7 µs against 16.7 / 107 at 16
            # rows, 8 warps), 8 at 128 (232 µs against 381); 3 stages were slower everywhere.
            return full, full, 4 if full <= 64 else 8, 1
        if kernel == "_l_bwd":
            # Same sweep: 4 warps, 3 stages; 64 rows up to m = 64 (30.2 µs against 38.5 at N = 4096),
            # 32 at m = 128 (176 µs against 257; 64 rows 265).
            return full, full if full <= 64 else 32, 4, 3
    # Compiled resources only (``kernel_resources.py --backward``, sm_90, d = 64): the R-backward
    # spilled with 32-row chunks at widths 64 and 128; these choices spill nothing.
    rows = 16 if full >= 64 else min(full, 32)
    return full, rows, 8 if full * max(16, pow2(head_dim)) >= 32 * 64 else 4, _STAGES


def _scratch(q: torch.Tensor, dv: int, b: int, m: int, num_steps: int, has_mask: bool, stats: bool,
             wide: bool, saved: bool = False) -> Scratch:
    """The call's intermediates, by block (``(BH, m, b, .)``): each step's ``ak``/``cl`` and, before
    the last, the next summaries ``sm`` and their ``cr``; ``y``; the gradients ``dak, dcl, dy`` and
    from T = 2 the summaries' ``dsum``; with STATS the L rows' ``lse, dlt``. float32 accumulators:
    ``dq`` (and ``dk`` from T = 2 or for wide blocks, ``dv`` for wide blocks). With a mask, the
    token index, lengths and offsets. ``saved`` (T = 1): the forward's ``ak0, cl0, y`` and layout
    are read instead (``_forward_buffers``), so none of them here."""
    B, H, N, D = q.shape
    rows, f32 = (B * H, m, b), torch.float32
    shapes = {}
    for t in range(num_steps if not saved else 0):
        shapes.update({f"ak{t}": (q.dtype, (*rows, D)), f"cl{t}": (f32, rows)})
        if t < num_steps - 1:
            shapes.update({f"sm{t + 1}": (q.dtype, (*rows, D)), f"cr{t}": (f32, rows)})
    if not saved:
        shapes["y"] = (q.dtype, (*rows, dv))
    shapes.update(dak=(f32, (*rows, D)), dcl=(f32, rows), dy=(f32, (*rows, dv)), dq=(f32, (B, H, N, D)))
    if num_steps > 1:
        shapes["dsum"] = (f32, (*rows, D))
    if num_steps > 1 or wide:
        shapes["dk"] = (f32, (B, H, N, D))
    if wide:
        shapes["dv"] = (f32, (B, H, N, dv))
    if stats:
        shapes.update(lse=(f32, rows), dlt=(f32, rows))
    if has_mask and not saved:
        shapes.update(tok=(torch.int64, (B, N)), lens=(torch.int64, (B,)), offs=(torch.int64, (B,)))
    return Scratch.of_shapes(shapes)


def _forward_buffers(q: torch.Tensor, v: torch.Tensor, b: int, m: int, has_mask: bool,
                     saved: torch.Tensor) -> dict:
    """The training forward's kept scratch (T = 1, all heads: ``launch.Scratch.plan``) as the
    backward's buffers: ``ak0``, ``cl0``, ``y`` (laid out by offset, ``(BH, b, m, .)``, aL stored as
    ``min(s, 1) * aK``: the L-programs' SAVED) and, with a mask, the sequences' layout (the same
    ``_layout_kernel`` placement, in the forward's own launch or first grid)."""
    plan = Scratch.plan(q, v.shape[-1], b, m, 1, has_mask, q.shape[1])
    if saved.dtype != torch.uint8 or saved.numel() != plan.nbytes:
        raise ValueError(f"saved: the forward's scratch of {plan.nbytes} bytes, got {saved.numel()} x {saved.dtype}")
    names = {"al": "ak0", "cl": "cl0"}
    return {names.get(name, name): x for name, x in plan.views(saved).items()}


@dataclass
class _Bwd:
    """What every launch of one backward call reads, and what they were (``recording``: a list to
    append each launch to, or None; ``where``: each tensor's source in ``SOURCES`` and byte offset)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: torch.Tensor
    grads: tuple  # dq, dk, dv: the outputs, in the inputs' dtype
    buf: dict  # the scratch's buffers by name
    b: int
    m: int
    scale: float
    seq: tuple  # (lengths, offsets, token index) pointers, or q three times without a mask
    dims: tuple  # (H, N, b, m, seq_len, pad_off)
    has_mask: bool
    recording: Optional[list] = None
    where: dict = field(default_factory=dict)
    saved: bool = False  # ``ak0, cl0, y`` and the layout are the forward's (``_forward_buffers``)

    @property
    def bh(self) -> int:
        return self.q.shape[0] * self.q.shape[1]

    @property
    def wide(self) -> bool:
        return pow2(self.b) > MAX_TILE

    @property
    def width(self) -> int:
        """The wider of the q/k and v head dims: what ``tile`` sizes a program's registers by."""
        return max(self.q.shape[-1], self.v.shape[-1])

    @property
    def timed(self) -> bool:
        """Whether ``tile``'s timed choices apply: 16-bit inputs on Hopper or later, or the interpreter."""
        return self.q.element_size() == 2 and (INTERPRETED or device_info(self.q)[1] >= 9)

    @property
    def l_tiles(self) -> int:
        """Tiles of blocks per offset: more than one where m is wider than ``MAX_TILE`` (STATS)."""
        return -(-self.m // MAX_TILE) if pow2(self.m) > MAX_TILE else 1

    def flags(self) -> dict:
        D = self.q.shape[-1]
        return dict(D=D, HAS_MASK=self.has_mask, IEEE=self.q.dtype == torch.float32, BD=max(16, pow2(D)))

    def launch(self, kernel, grid: int, *args, **kwargs) -> None:
        compiled = kernel[(grid,)](*args, **kwargs)
        if self.recording is not None:
            self.recording.append((compiled, grid, [*args, *(kwargs[n] for n in kernel.arg_names[len(args):])]))

    def r_launch(self, name: str, *ptrs, **consts) -> None:
        """An R-program per (head, block): ``_r_fwd`` or ``_r_bwd``, over key tiles where a block is
        longer than ``MAX_TILE``."""
        kernel = getattr(_kernels(self.wide), name + ("_wide_kernel" if self.wide else "_kernel"))
        BB, BQ, warps, stages = tile(min(self.b, MAX_TILE), self.width, name + ("_wide" if self.wide else ""),
                                     self.timed)
        DV = self.v.shape[-1]
        self.launch(kernel, self.bh * self.m, *ptrs, *self.seq, *self.dims, *self.q.stride(), *self.k.stride(),
                    *self.v.stride(), self.scale, DV=DV, BB=BB, BQ=BQ, BDV=max(16, pow2(DV)), **self.flags(),
                    **consts, num_warps=warps, num_stages=stages)

    def l_launch(self, kernel, *ptrs, strides=(), **consts) -> None:
        """An L-program per (head, offset, tile of blocks)."""
        BM, BQ, warps, stages = tile(min(self.m, MAX_TILE), self.width, kernel.fn.__name__[:-7], self.timed)
        self.launch(kernel, self.bh * self.b * self.l_tiles, *ptrs, *self.seq, *self.dims, self.l_tiles,
                    *self.q.stride(), *strides, self.scale, BM=BM, BQ=BQ, STATS=self.l_tiles > 1, **self.flags(),
                    **consts, num_warps=warps, num_stages=stages)

    def l_stats(self, ak, cl, y, d_sum, summ, c_r, **consts) -> None:
        """Where an offset's blocks span several tiles: each query's L log-normaliser (and
        ``sum_k L dL``) into ``lse`` (and ``dlt``), one program per (head, offset)."""
        if self.l_tiles == 1:
            return
        BM, BQ, warps, stages = tile(MAX_TILE, self.q.shape[-1], "_l_stats")
        DV = self.v.shape[-1]
        self.launch(_kernels()._l_stats_kernel, self.bh * self.b, self.q, ak, cl, y, self.grad_out, d_sum, summ, c_r,
                    self.buf["lse"], self.buf["dlt"], *self.seq, *self.dims, 1, *self.q.stride(),
                    *self.grad_out.stride(), self.scale, DV=DV, BDV=max(16, pow2(DV)), BM=BM, BQ=BQ, **self.flags(),
                    SAVED=self.saved, **consts, num_warps=warps, num_stages=stages)

    def flat(self, kernel, args: list, n: int) -> None:
        """``kernel`` over flat buffers of up to ``n`` elements, ``_FLAT`` per program."""
        self.launch(kernel, -(-n // _FLAT), *args, BLOCK=_FLAT, num_warps=4)


def _sequences(c: _Bwd, mask: Optional[torch.Tensor], pad_type: str) -> None:
    """Each sequence's token index, length and offset (the forward's ``_layout_kernel``) into the
    scratch (unless the forward's are given: ``saved``), or one length for all without a mask: sets
    ``c.seq`` and ``c.dims``."""
    B, H, N, _ = c.q.shape
    if mask is None:
        pad_off = c.m * c.b - N if pad_type == "pre" else 0
        c.seq, c.dims = (c.q, c.q, c.q), (H, N, c.b, c.m, N, pad_off)
        return
    tok, lens, offs = c.buf["tok"], c.buf["lens"], c.buf["offs"]
    if not c.saved:
        c.launch(_layout_kernel, B, mask, tok, lens, offs, *mask.stride(), N, c.b, PRE=pad_type == "pre",
                 CH=min(4096, max(16, pow2(N))), num_warps=4 if N <= 1024 else 8)
    c.seq, c.dims = (lens, offs, tok), (H, N, c.b, c.m, N, 0)


def _zeros(c: _Bwd) -> None:
    """What no program writes or what is added to atomically starts at zero: the gradients at
    padding positions (with a mask), dq's accumulator (STATS), dk's and dv's (wide blocks)."""
    zero = list(c.grads) if c.has_mask else []
    if c.l_tiles > 1:
        zero.append(c.buf["dq"])
    if c.wide:
        zero += [c.buf["dk"], c.buf["dv"]]
    for i in range(0, len(zero), 3):  # three buffers a launch; a missing one: the first, length 0
        group = zero[i:i + 3]
        args = [x for j in range(3) for x in ((group[j], group[j].numel()) if j < len(group) else (group[0], 0))]
        c.flat(_kernels()._zero_kernel, args, max(t.numel() for t in group))


def _recompute(c: _Bwd, num_steps: int) -> None:
    """Each step's intermediates, rebuilt: ``ak{t}``, ``cl{t}``, ``y`` (the last step), and before
    the last step the next summaries ``sm{t+1}`` and their ``cr{t}``."""
    buf, y, src = c.buf, c.buf["y"], c.q
    for t in range(num_steps):
        last = t == num_steps - 1
        c.r_launch("_r_fwd", src, c.k, c.v, buf[f"ak{t}"], buf[f"cl{t}"], y, FROM_SUMMARY=t > 0, WANT_Y=last)
        if not last:
            src = buf[f"sm{t + 1}"]
            c.l_stats(buf[f"ak{t}"], buf[f"cl{t}"], y, y, y, buf[f"cl{t}"], WANT_DELTA=False, FINAL=False)
            c.l_launch(_kernels()._l_fwd_kernel, c.q, buf[f"ak{t}"], buf[f"cl{t}"], src, buf[f"cr{t}"],
                       _stats(c)[0])


def _stats(c: _Bwd) -> tuple:
    """The L rows' statistics (``lse``, ``dlt``), or a placeholder never read without STATS."""
    return (c.buf["lse"], c.buf["dlt"]) if c.l_tiles > 1 else (c.buf["dcl"], c.buf["dcl"])


def _walk_back(c: _Bwd, num_steps: int) -> None:
    """The output stage, then each step from the last: its L-stage (output or summaries), then its
    R-step, whose row-vector gradient feeds the previous step's summary stage (or dq at step 1).
    dk's accumulator is unused at T = 1 (each step writes it whole; step 1 writes dk itself)."""
    buf, (dqo, dko, dvo) = c.buf, c.grads
    dak, dcl, dy = buf["dak"], buf["dcl"], buf["dy"]
    d_sum = buf.get("dsum", dak)  # (unused at T = 1)
    dk_acc, dv_acc = buf.get("dk", dko), buf.get("dv", dvo)
    kern, DV = _kernels(), c.v.shape[-1]
    for t in range(num_steps - 1, -1, -1):
        final = t == num_steps - 1
        # The next step's summaries and their cR (summary stage); unused by the output stage.
        summ, c_r = (dak, dcl) if final else (buf[f"sm{t + 1}"], buf[f"cr{t}"])
        extras = (buf["y"], c.grad_out, d_sum, summ, c_r)
        c.l_stats(buf[f"ak{t}"], buf[f"cl{t}"], buf["y"], *extras[2:], WANT_DELTA=True, FINAL=final)
        c.l_launch(kern._l_bwd_kernel, c.q, buf[f"ak{t}"], buf[f"cl{t}"], *extras, *_stats(c), dak, dcl, dy,
                   buf["dq"], strides=c.grad_out.stride(), FINAL=final, DV=DV, BDV=max(16, pow2(DV)), DQ_FIRST=final,
                   SAVED=c.saved)
        c.r_launch("_r_bwd", c.q if t == 0 else buf[f"sm{t}"], c.k, c.v, dak, dcl, dy, d_sum, buf["dq"], dk_acc,
                   dv_acc, dqo, dko, dvo, FROM_SUMMARY=t > 0, WANT_Y=final, DK_FIRST=final, DK_LAST=t == 0)
    if c.wide:
        c.flat(kern._cast_kernel, [dk_acc, dko, dk_acc.numel(), dv_acc, dvo, dv_acc.numel()],
               max(dk_acc.numel(), dv_acc.numel()))


_KERNELS: dict = {}


def _kernels(wide: bool = False):
    """The kernel module (``backward``, or ``backward_wide`` for blocks longer than a tile),
    imported on first use (so that TRITON_INTERPRET set by a test before that still takes effect)."""
    if wide not in _KERNELS:
        from . import backward, backward_wide

        _KERNELS.update({False: backward, True: backward_wide})
    return _KERNELS[wide]


@dataclass
class BackwardReplay:
    """The recorded launches of one backward signature (sources: ``SOURCES``)."""

    launches: list
    pointers: tuple  # (source index, byte offset) of every distinct pointer the launches take
    shapes: tuple  # of dq, dk, dv
    scratch_bytes: int
    dtype: torch.dtype
    device: torch.device

    def run(self, q, k, v, mask, grad_out, saved=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grads = tuple(torch.empty(s, dtype=self.dtype, device=self.device) for s in self.shapes)
        stream = current_stream(self.device.index)
        scratch = alloc(self.scratch_bytes, stream, self.device)
        sources = (q.data_ptr(), k.data_ptr(), v.data_ptr(), 0 if mask is None else mask.data_ptr(),
                   grad_out.data_ptr(), *(g.data_ptr() for g in grads), address(scratch),
                   0 if saved is None else saved.data_ptr())
        relaunch(self.launches, self.pointers, sources, stream)
        free(scratch)  # in stream order: later work on this stream may reuse it
        return grads


def _key(q, k, v, mask, grad_out, b: int, num_steps: int, pad_type: str, scale: float,
         saved: Optional[torch.Tensor]) -> Optional[tuple]:
    """The replay signature of a call, or None where no replay applies (the interpreter, a launch
    hook set, a mask on another device). A call given the forward's intermediates launches other
    kernels than one that recomputes them: whether it is, is part of the signature."""
    if not q.is_cuda or INTERPRETED or not knobs_allow_replay() or grad_out.device != q.device:
        return None
    sig = signature(q, k, v, mask, grad_out, b, num_steps, pad_type, scale)
    return None if sig is None else (sig, grad_out.dtype, saved is not None)


def _launch(q, k, v, mask, grad_out, b: int, m: int, num_steps: int, pad_type: str, scale: float,
            recording: Optional[list], saved: Optional[torch.Tensor] = None) -> tuple[_Bwd, torch.Tensor]:
    """Every launch of a call through Triton's launcher: (the call, its scratch tensor)."""
    has_mask, wide = mask is not None, pow2(b) > MAX_TILE
    plan = _scratch(q, v.shape[-1], b, m, num_steps, has_mask, pow2(m) > MAX_TILE, wide, saved is not None)
    scratch = torch.empty(plan.nbytes, dtype=torch.uint8, device=q.device)
    grads = tuple(torch.empty(x.shape, dtype=q.dtype, device=q.device) for x in (q, k, v))
    c = _Bwd(q, k, v, grad_out, grads, plan.views(scratch), b, m, float(scale), (), (), has_mask, recording,
             saved=saved is not None)
    mask = mask.to(device=q.device).view(torch.uint8) if has_mask else None
    sources = (q, k, v, mask, grad_out, *grads)
    c.where = {id(t): (i, 0) for i, t in enumerate(sources) if t is not None}
    c.where.update(placed_in(c.buf.values(), scratch, 8))
    if saved is not None:
        kept = _forward_buffers(q, v, b, m, has_mask, saved)
        c.buf.update(kept)
        c.where.update(placed_in(kept.values(), saved, 9))
    _sequences(c, mask, pad_type)
    _zeros(c)
    if saved is None:
        _recompute(c, num_steps)
    _walk_back(c, num_steps)
    return c, scratch


def monarch_attention_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
    grad_out: torch.Tensor, block_size: int, num_steps: int, pad_type: str, scale: float,
    exact_diagonal: bool = False, global_keys: int = 0, remember_as: Optional[tuple] = None,
    saved: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of ``monarch_attention_triton(q, k, v, ...)`` for the output gradient
    ``grad_out``, in the inputs' dtype, contiguous; zero at padding positions. More blocks than
    ``MAX_TILE`` per offset are split into tiles (STATS: each query's L statistics first, dq added
    atomically); blocks longer than ``MAX_TILE`` (b = sqrt(N) beyond N = 16384) are run over key
    tiles (``backward_wide.py``). A signature seen before replays its recorded launches. The op's
    options (``exact_diagonal``, ``global_keys``: docs/algorithm.md, section 7) have no backward
    kernels (``ops.monarch_attention`` runs them on the reference). ``remember_as``: a further key
    under which the call's replay is kept (``triton_function.py``: the forward's key and the output
    gradient's layout). ``saved`` (T = 1 only): what the training forward kept
    (``launch.monarch_attention_triton_saving``), read in place of the recomputation (the same
    gradients up to rounding: the forward computes them in another order, docs/algorithm.md, section 9)."""
    B, H, N, D = q.shape
    b = capped_block_size(block_size, N)
    m = max(1, -(-N // b))
    if B * H == 0 or N == 0:
        return tuple(torch.zeros(x.shape, dtype=x.dtype, device=x.device) for x in (q, k, v))
    if exact_diagonal or global_keys:
        raise NotImplementedError("the op's options exact_diagonal and global_keys have no backward kernels: "
                                  "ops.monarch_attention runs inputs that need grad on the reference with them")
    if saved is not None and num_steps != 1:
        raise ValueError(f"saved: the forward's intermediates are kept at num_steps = 1 only, got {num_steps}")
    key = _key(q, k, v, key_padding_mask, grad_out, b, num_steps, pad_type, scale, saved)
    replay = REPLAYS.get(key) if key is not None else None
    if replay is None:
        c, scratch = _launch(q, k, v, key_padding_mask, grad_out, b, m, num_steps, pad_type, scale,
                             [] if key is not None else None, saved)
        recorded = None if key is None else record(c.recording, lambda t: c.where.get(id(t)))
        if recorded is None:
            return c.grads
        replay = BackwardReplay(*recorded, tuple(g.shape for g in c.grads), scratch.numel(), q.dtype, q.device)
        _remember(key, replay)
        _remember(remember_as, replay)
        return c.grads
    _remember(remember_as, replay)
    return replay.run(q, k, v, key_padding_mask, grad_out, saved)


def _remember(key: Optional[tuple], replay: BackwardReplay) -> None:
    if key is None:
        return
    if len(REPLAYS) >= _MAX_REPLAYS:  # many shapes: start over
        REPLAYS.clear()
    REPLAYS[key] = replay
