"""The launcher: check the inputs, plan the tiles, lay out the sequences, allocate the
intermediates, launch the on-chip kernel (short sequences: no intermediates in memory, the
sequences laid out in it), the fused kernel or the tiled steps. Same semantics as
``kernels/reference.py`` (the spec); no host sync, CUDA-graph safe.

Each sequence is laid out by its own length (``kernels/layout.py``): slot ``p = k*b + j`` of
sequence ``s`` holds its real token of rank ``p - off[s]`` if that rank is in ``[0, L[s])``; a
sequence uses ``m_s = ceil(L[s] / b)`` blocks, and programs past ``m_s`` exit at once. With a
key-padding mask, each sequence's token index, length and offset are built first: by a launch of
their own, or by the first grid's programs (``layout_kernel.py``; ``plan.py`` chooses).

A tiled T = 1 inference call may keep aL in its output tensor, not in the scratch
(``LaunchPlan.al_home``, ``stages._al_rows``; by default where both steps' tiles have at most 32 rows,
N <= 1024, ``plan.AL_HOME_ROWS``; ``Knobs(al_home=True)`` also above): its intermediates are then Y
and cL, 0.26x the bytes of q, k, v and the output instead of 0.51x. A tiled call whose intermediates are large runs its
heads in chunks that reuse one scratch (``plan.heads_per_chunk``): its peak memory stays near the
bytes of q, k, v and the output.
A training call (``monarch_attention_triton_saving``) makes the same launches (but never the
on-chip kernel's, which keeps nothing in memory) and, at T = 1 where its heads run at once, keeps
its scratch (``aL, cL, Y``, the layout) for the backward instead of freeing it (``saved_bytes``);
its replays are kept apart from inference calls' (``saving_key``).

On Hopper, every launch of a call after its first uses programmatic dependent launch: the grid is
scheduled while the previous one drains, and waits in the kernel (``common._after_previous_grid``).
The first may follow the caller's kernels, whose writes it reads, so it never starts early.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Optional

import torch

from ..layout import capped_block_size, output_like
from . import plan as plan_module
from .fused import _fused_kernel
from .layout_kernel import _layout_kernel
from .onchip import _onchip_kernel
from .plan import Knobs, LaunchPlan, heads_per_chunk, make_plan, pow2
from .replay import Replay, knobs_allow_replay, placed_in, signature
from .tiled import _l_out_kernel, _l_sum_kernel, _r_step_kernel
from .variants import _exact_kernel, _select_kernel

# triton.jit built interpreted kernels at import iff TRITON_INTERPRET was set then.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
_DEVICES: dict[int, tuple[int, int]] = {}
REPLAYS: dict[tuple, Replay] = {}
_MAX_REPLAYS = 512
# The kernels index slots, tiles and block counts in int32: with b capped at N, the largest such
# value is a slot or sum below m * b + b <= 2N (``k*b + j``, ``L + b - 1``), so N up to 2**30 fits.
MAX_SEQ_LEN = 2**30
# Global keys are held in registers, as one tile, by the programs that choose them and that attend
# to them (``variants.py``): up to 128 (at most N are ever used).
MAX_GLOBAL_KEYS = 128


def device_info(q: torch.Tensor) -> tuple[int, int]:
    """(SM count, compute capability major) of q's GPU, read once per device."""
    dev = q.device.index if q.device.index is not None else torch.cuda.current_device()
    if dev not in _DEVICES:
        props = torch.cuda.get_device_properties(dev)
        _DEVICES[dev] = (props.multi_processor_count, props.major)
    return _DEVICES[dev]


def plan_for(q: torch.Tensor, v: torch.Tensor, block_size: int, num_steps: int,
             knobs: Knobs = Knobs(), plain: bool = False, own_output: bool = True) -> LaunchPlan:
    """The launch plan of a call on ``q, v`` (only shapes and the device are read); ``plain``: an
    inference call without the op's options (``make_plan``); ``own_output``: the launcher allocates
    the output (no caller's)."""
    B, H, N, D = q.shape
    b = capped_block_size(block_size, N)
    width = max(16, pow2(D), pow2(v.shape[-1]))
    sm_count, major = device_info(q) if q.is_cuda else (None, 0)
    plan = make_plan(B * H, b, max(1, -(-N // b)), width, num_steps, sm_count,
                     pdl=q.is_cuda and not INTERPRETED and major >= 9, knobs=knobs, plain=plain,
                     ieee=q.dtype == torch.float32)
    # aL goes to the output only where the launcher allocates it (a caller's may alias q, k or v,
    # which the R-step reads) and D <= dv: aL (D features a slot) wider than its token's output row
    # ran into the next token's row (d = 80, dv = 48 on an H100: relative error 0.29).
    fits = own_output and D <= v.shape[-1]
    return plan if fits or not plan.al_home else replace(plan, al_home=False)


@dataclass(frozen=True)
class Scratch:
    """Byte offsets of the intermediates in the call's one scratch allocation: aL (BH, b, m, D) or,
    where it lies in the output (``LaunchPlan.al_home``), its spare rows (BH, ``spare_rows``, D);
    Y (BH, b, m, DV) and, from T = 2, the summaries (BH, m, b, D) in the input dtype; cL (BH, b, m)
    in float32, for the ``BH`` heads of one chunk; with a mask, the token index (B, N), lengths and
    offsets (B) in int64; with the options (``variants.py``, which run all heads at once), the exact
    columns exl (BH, b, m) float32 and exy (BH, b, m, DV), and for global keys their scores (BH, N)
    float32, flags (BH, N) int8 and positions (BH, BG) int64. Every offset is a multiple of 128
    bytes, so each buffer keeps the 16-byte alignment the kernels are compiled for."""

    shapes: dict  # name -> (dtype, shape)
    offsets: dict  # name -> byte offset
    nbytes: int

    @classmethod
    def plan(cls, q: torch.Tensor, dv: int, b: int, m: int, num_steps: int, has_mask: bool,
             heads: int, exact: bool = False, globals_width: int = 0, al_home: bool = False) -> "Scratch":
        B, _, N, D = q.shape
        BH = B * heads
        if al_home:  # aL in the output tensor; rows for the slots without a token (``spare_rows``)
            shapes = {"spare": (q.dtype, (BH, spare_rows(N, b, m, has_mask), D))}
        else:
            shapes = {"al": (q.dtype, (BH, b, m, D))}
        shapes.update(y=(q.dtype, (BH, b, m, dv)), cl=(torch.float32, (BH, b, m)))
        if num_steps > 1:
            shapes["summ"] = (q.dtype, (BH, m, b, D))
        if has_mask:
            shapes.update(tok=(torch.int64, (B, N)), lens=(torch.int64, (B,)), offs=(torch.int64, (B,)))
        if exact:
            shapes.update(exl=(torch.float32, (BH, b, m)), exy=(q.dtype, (BH, b, m, dv)))
        if globals_width:
            shapes.update(gscore=(torch.float32, (BH, N)), gflag=(torch.int8, (BH, N)),
                          gsel=(torch.int64, (BH, globals_width)))
        return cls.of_shapes(shapes)

    @classmethod
    def of_shapes(cls, shapes: dict) -> "Scratch":
        """Buffers of these (dtype, shape) one after the other, each at a multiple of 128 bytes."""
        offsets, at = {}, 0
        for name, (dtype, shape) in shapes.items():
            offsets[name] = at
            at += -(-math.prod(shape) * dtype.itemsize // 128) * 128
        return cls(shapes, offsets, at)

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, (dtype, shape) in self.shapes.items():
            at = self.offsets[name]
            out[name] = buf[at:at + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
        return out


def spare_rows(N: int, b: int, m: int, has_mask: bool) -> int:
    """Rows per head for the aL of slots that hold no token, where aL lies in the output
    (``stages._al_rows``): a sequence's blocks have ``m_s * b - L`` such slots, fewer than b; without a
    mask every sequence has ``m * b - N`` (0 where b divides N)."""
    return b if has_mask else m * b - N


def _chunk_heads(q, dv: int, b: int, m: int, num_steps: int, plan: LaunchPlan, knobs: Knobs) -> int:
    """Heads of each sequence per chunk (all of them in fused and on-chip modes: one program per head)."""
    H = q.shape[1]
    if plan.mode in ("fused", "onchip"):
        return H
    whole = Scratch.plan(q, dv, b, m, num_steps, False, H, al_home=plan.al_home).nbytes
    io = q.shape[0] * H * q.shape[2] * (2 * q.shape[3] + 2 * dv) * q.dtype.itemsize
    return heads_per_chunk(H, whole, io, knobs)


@dataclass
class _Call:
    """Everything the launches of one call read, and what they were (``recording``: a list to
    append each launch to, or None). ``pointer_of`` says where each tensor a launch takes lies:
    one of the call's tensors (``replay.SOURCES``) plus a byte offset."""

    plan: LaunchPlan
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    mask: Optional[torch.Tensor]  # uint8 view of the key-padding mask
    scratch: torch.Tensor
    buffers: dict
    b: int
    m: int
    num_steps: int
    pad_type: str
    scale: float
    recording: Optional[list] = None
    diag: bool = False  # exact diagonal blocks (T >= 2 only: at T = 1 they are the published steps)
    num_globals: int = 0  # global keys, at most N
    layout_in_grid: bool = False  # a masked tiled call's first grid lays out the sequences
    saves: bool = False  # the scratch holds what the backward reads (``saved_bytes``)

    @property
    def exact(self) -> bool:
        """Whether the L-steps have each query's exact column (``variants.py``)."""
        return self.diag or self.num_globals > 0

    def variant_args(self) -> dict:
        """The options' pointers (q where unused) and flags, by name."""
        buf, q = self.buffers, self.q
        return dict(ex_l_ptr=buf.get("exl", q), ex_y_ptr=buf.get("exy", q), gflag_ptr=buf.get("gflag", q))

    def __post_init__(self) -> None:
        self._where = {id(t): (i, 0) for i, t in enumerate((self.q, self.k, self.v, self.out, self.mask))}
        self._where.update(placed_in(self.buffers.values(), self.scratch, 5))
        self._alive = []  # views registered below, kept so that their ids stay theirs

    @property
    def has_mask(self) -> bool:
        return self.mask is not None

    @property
    def scratch_bytes(self) -> int:
        return self.scratch.numel()

    def pointer_of(self, t: torch.Tensor) -> Optional[tuple[int, int]]:
        return self._where.get(id(t))

    def heads(self, h0: int, h1: int) -> tuple:
        """q, k, v and the output restricted to heads [h0, h1) of every sequence."""
        views = []
        for i, t in enumerate((self.q, self.k, self.v, self.out)):
            view = t[:, h0:h1]
            self._where[id(view)] = (i, view.data_ptr() - t.data_ptr())
            views.append(view)
        self._alive += views
        return tuple(views)

    @property
    def pad_off(self) -> int:
        """Pre-padding offset of every sequence where there is no mask."""
        return self.m * self.b - self.q.shape[2] if self.pad_type == "pre" else 0

    def seq_args(self, H: int) -> tuple:
        """The sequences' pointers (unused without a mask: they point at q) and the dims."""
        q, N = self.q, self.q.shape[2]
        if self.has_mask:
            buf = self.buffers
            return (buf["lens"], buf["offs"], buf["tok"], H, N, self.b, self.m, N, 0)
        return (q, q, q, H, N, self.b, self.m, N, self.pad_off)

    def mask_args(self) -> tuple:
        """The mask and its strides (q and zeros without a mask: never read)."""
        return (self.mask, *self.mask.stride()) if self.has_mask else (self.q, 0, 0)

    def flags(self) -> dict:
        """Compile-time flags every kernel takes that depend on the inputs alone."""
        D = self.q.shape[-1]
        flags = dict(D=D, HAS_MASK=self.has_mask, IEEE=self.q.dtype == torch.float32, BD=max(16, pow2(D)))
        if self.plan.stages is not None:
            flags["num_stages"] = self.plan.stages
        return flags

    def layout_flags(self, on: bool, warps: int) -> dict:
        """Flags of a grid that lays out the sequences (``on``): padding side and mask chunk (16
        positions per thread); the kernel's defaults otherwise, so that one compiled kernel serves
        both sides."""
        if not on:
            return dict(LAYOUT=False, PRE=False, LCH=16)
        return dict(LAYOUT=True, PRE=self.pad_type == "pre", LCH=min(512 * warps, max(16, pow2(self.q.shape[2]))))

    def chained(self, after_ours: bool) -> dict:
        """Launch arguments of a grid; ``after_ours``: a grid of this call runs before it."""
        on = self.plan.pdl and after_ours
        return {"PDL": on, **({"launch_pdl": True} if on else {})}

    def launch(self, kernel, grid: int, *args, **kwargs) -> None:
        compiled = kernel[(grid,)](*args, **kwargs)
        if self.recording is not None:
            self.recording.append((compiled, grid, [*args, *(kwargs[n] for n in kernel.arg_names[len(args):])]))


def monarch_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
    block_size: int, num_steps: int, pad_type: str, scale: float, out: Optional[torch.Tensor] = None,
    *, knobs: Optional[Knobs] = None, poison: bool = False, exact_diagonal: bool = False, global_keys: int = 0,
    remember_as: Optional[tuple] = None,
) -> torch.Tensor:
    """Launch the kernels on inputs as validated by ``ops.monarch_attention``. ``out``: where to
    write (default: a new tensor laid out like q); ``knobs``: benchmark overrides of the plan;
    ``poison``: fill the intermediates with NaN first (tests). ``exact_diagonal``, ``global_keys``:
    the op's options (docs/algorithm.md, section 7; ``variants.py``). ``remember_as``: a further key
    under which the call's replay is kept (``ops``: its own key of the call, looked up in ``REPLAYS``)."""
    return _forward(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale, out, knobs, poison,
                    (exact_diagonal, global_keys), remember_as, keep=False)[0]


def monarch_attention_triton_saving(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
    block_size: int, num_steps: int, pad_type: str, scale: float, out: Optional[torch.Tensor] = None,
    *, remember_as: Optional[tuple] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``monarch_attention_triton`` for training (the options off: they have no backward kernels):
    the same launches, replays and output, and what the backward would otherwise rebuild
    (``backward_launch.monarch_attention_backward``'s ``saved``): the call's scratch, kept instead
    of freed, ``saved_bytes`` long; None where that is 0."""
    return _forward(q, k, v, key_padding_mask, block_size, num_steps, pad_type, scale, out, None, False, (False, 0),
                    remember_as, keep=True)


def saved_bytes(q: torch.Tensor, v: torch.Tensor, block_size: int, num_steps: int, has_mask: bool) -> int:
    """Bytes a training call keeps for its backward (``monarch_attention_triton_saving``), from the
    shapes alone (the custom op's fake reads it too): its whole scratch at T = 1, ``aL, Y, cL``
    (``(D + DV) e + 4`` bytes per token and head) and with a mask the sequences' layout (8 bytes per
    token). 0 where the backward recomputes instead: from T = 2 (the steps share one ``aL`` buffer,
    and the summaries' ``cR`` is not kept), and where the scratch is above ``plan.CHUNK_BYTES`` (the
    heads then run in chunks that reuse one scratch; keeping all of it would hold that much memory
    until the backward)."""
    B, H, N, _ = q.shape
    if num_steps != 1 or B * H == 0 or N == 0:
        return 0
    b = capped_block_size(block_size, N)
    m = torch.sym_max(1, -(-N // b))
    if Scratch.plan(q, v.shape[-1], b, m, 1, False, H).nbytes > plan_module.CHUNK_BYTES:  # ``_chunk_heads``
        return 0
    return Scratch.plan(q, v.shape[-1], b, m, 1, has_mask, H).nbytes


def _forward(q, k, v, key_padding_mask, block_size: int, num_steps: int, pad_type: str, scale: float,
             out: Optional[torch.Tensor], knobs: Optional[Knobs], poison: bool, options: tuple,
             remember_as: Optional[tuple], keep: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(output, the kept scratch or None): ``monarch_attention_triton``, keeping the scratch where
    ``keep`` and the call saves (``saved_bytes``). ``options``: (exact_diagonal, global_keys)."""
    B, H, N, D = q.shape
    DV = v.shape[-1]
    assert k.shape[:3] == q.shape[:3] and v.shape[:3] == q.shape[:3] and k.shape[-1] == D
    _refuse_beyond_limits(N, options[1])
    # b >= N is one block, exact softmax: never a longer, padded one (scratch, grid and replay
    # signature follow the capped b).
    b = capped_block_size(block_size, N)
    m = max(1, -(-N // b))
    if B * H == 0 or N == 0:
        return output_like(q, DV) if out is None else out, None
    fast = None
    if keep:
        remember_as = saving_key(remember_as)
    if q.is_cuda and not INTERPRETED and knobs is None and not poison and knobs_allow_replay():
        fast = signature(q, k, v, key_padding_mask, out, b, num_steps, pad_type, scale, *options)
        fast = saving_key(fast) if keep else fast
        replay = REPLAYS.get(fast)
        if replay is not None:
            _remember(remember_as, replay)
            if keep:
                return replay.run_keeping(q, k, v, key_padding_mask, out)
            return replay.run(q, k, v, key_padding_mask, out), None
    call = _launch_call(q, k, v, key_padding_mask, b, m, num_steps, pad_type, scale, out, knobs or Knobs(), poison,
                        options, fast is not None, keep)
    if fast is not None:
        replay = Replay.of(call)
        _remember(fast, replay)
        _remember(remember_as, replay)
    return call.out, call.scratch if keep and call.saves else None


def _launch_call(q, k, v, key_padding_mask, b: int, m: int, num_steps: int, pad_type: str, scale: float,
                 out: Optional[torch.Tensor], knobs: Knobs, poison: bool, options: tuple, recording: bool,
                 keep: bool) -> _Call:
    """A call's scratch, and every launch of it through Triton's launcher (``recording``: kept in
    the call, for its replay). ``keep``: a training call (never the on-chip kernel)."""
    H, N, DV = q.shape[1], q.shape[2], v.shape[-1]
    diag, num_globals = options[0] and num_steps > 1, min(options[1], N)
    exact = diag or num_globals > 0
    plan = plan_for(q, v, b, num_steps, knobs, plain=not (keep or exact), own_output=out is None)
    out = output_like(q, DV) if out is None else out
    has_mask = key_padding_mask is not None
    heads = H if exact else _chunk_heads(q, DV, b, m, num_steps, plan, knobs)
    if plan.mode == "onchip":  # no intermediates in memory, the layout made in the kernel
        scratch = Scratch.of_shapes({})
    else:
        scratch = Scratch.plan(q, DV, b, m, num_steps, has_mask, heads, exact,
                               num_globals and max(16, pow2(num_globals)), al_home=plan.al_home)
    buf = torch.empty(scratch.nbytes, dtype=torch.uint8, device=q.device)
    buffers = scratch.views(buf)
    if "y" in buffers:
        buffers.setdefault("summ", buffers.get("al", buffers["y"]))  # T = 1: never read
    if poison:
        _poison(buffers)
    mask = key_padding_mask.to(device=q.device).view(torch.uint8) if has_mask else None
    # The global keys' choice reads the layout before the first R-step: a launch of its own then.
    in_grid = has_mask and plan.layout_in_grid and plan.mode == "tiles" and not num_globals
    # Whether the scratch holds, for all heads, what the backward reads (training calls keep their
    # replays apart from inference calls': ``saving_key``; the on-chip kernel keeps nothing).
    saves = plan.mode != "onchip" and not exact and heads == H and (
        saved_bytes(q, v, b, num_steps, has_mask) == scratch.nbytes)
    call = _Call(plan, q, k, v, out, mask, buf, buffers, b, m, num_steps, pad_type, float(scale),
                 recording=[] if recording else None, diag=diag, num_globals=num_globals, layout_in_grid=in_grid,
                 saves=saves)
    _launch_all(call, heads)
    return call


def _refuse_beyond_limits(N: int, global_keys: int) -> None:
    """One-line errors for what the kernels cannot index or hold."""
    if N > MAX_SEQ_LEN:
        raise ValueError(f"the Triton kernels take sequences of at most {MAX_SEQ_LEN} tokens, got {N}")
    if min(global_keys, N) > MAX_GLOBAL_KEYS:
        raise ValueError(f"the Triton kernels take at most {MAX_GLOBAL_KEYS} global keys, got {global_keys} "
                         "(backend='torch' takes any number)")


def _poison(buffers: dict) -> None:
    """Tests: reading an intermediate nobody wrote shows up as NaN (a flag or an index: as junk)."""
    for name, x in buffers.items():
        if name in ("al", "spare", "y", "summ", "cl", "exl", "exy", "gscore"):
            x.fill_(float("nan"))
        elif name in ("gflag", "gsel"):
            x.fill_(-3)


def _launch_all(c: _Call, heads: int) -> None:
    """The on-chip kernel alone; or the layout launch where the first grid does not lay out the
    sequences, then the fused kernel, or the tiled steps for each chunk of ``heads`` heads."""
    if c.plan.mode == "onchip":
        _launch_onchip(c)
        return
    if c.has_mask and not c.layout_in_grid:
        _launch_layout(c)
    if c.plan.mode == "fused":
        _launch_fused(c)
    else:
        for h0 in range(0, c.q.shape[1], heads):
            _launch_tiled(c, h0, min(c.q.shape[1], h0 + heads))


def set_chunk_bytes(limit: int) -> None:
    """Intermediates above ``limit`` bytes run the heads in chunks (``plan.heads_per_chunk``): less
    peak memory for more grid boundaries. Replays recorded under the old limit are dropped."""
    plan_module.CHUNK_BYTES = limit
    REPLAYS.clear()


def saving_key(key: Optional[tuple]) -> Optional[tuple]:
    """The key under which a training call's replay is kept (``monarch_attention_triton_saving``):
    apart from an inference call's at the same key, which may be the on-chip kernel's, whose scratch
    holds nothing for the backward."""
    return None if key is None else ("saving", key)


def _remember(key: Optional[tuple], replay: Optional[Replay]) -> None:
    if key is None or replay is None:
        return
    if len(REPLAYS) >= _MAX_REPLAYS:  # many shapes (e.g. evaluation at every length): start over
        REPLAYS.clear()
    REPLAYS[key] = replay


def _launch_layout(c: _Call) -> None:
    """Each sequence's token index, length and offset, in one launch; chunks of up to 4096
    positions (each chunk is a serial step of the sequence's one program)."""
    B, N = c.mask.shape
    c.launch(_layout_kernel, B, c.mask, c.buffers["tok"], c.buffers["lens"], c.buffers["offs"], *c.mask.stride(),
             N, c.b, PRE=c.pad_type == "pre", CH=min(4096, max(16, pow2(N))), num_warps=4 if N <= 1024 else 8)


def _launch_fused(c: _Call) -> None:
    """One program per (batch, head): all steps in one launch."""
    q, DV, buf = c.q, c.v.shape[-1], c.buffers
    rt, lt, st = c.plan.r_step, c.plan.l_step, c.plan.s_step
    mask, *mask_strides = c.mask_args()
    c.launch(
        _fused_kernel, q.shape[0] * q.shape[1],
        q, c.k, c.v, buf["summ"], buf["al"], buf["cl"], buf["y"], c.out, mask, *c.seq_args(q.shape[1]), lt.tiles,
        *q.stride(), *c.k.stride(), *c.v.stride(), *c.out.stride(), *mask_strides, c.scale,
        DV=DV, NUM_STEPS=c.num_steps, R_GROUPED=rt.grouped, R_ONE_COL=rt.one_col, L_GROUPED=lt.grouped,
        L_ONE_COL=lt.one_col, R_TILE=rt.rows, R_COLS=rt.cols, L_TILE=lt.rows, L_COLS=lt.cols, S_COLS=st.cols,
        BDV=max(16, pow2(DV)), **c.flags(), **c.chained(c.has_mask), num_warps=c.plan.fused_warps,
        **c.variant_args(), gsel_ptr=buf.get("gsel", q), score_ptr=buf.get("gscore", q), G=c.num_globals,
        EXACT_DIAG=c.diag, GLOBAL=c.num_globals > 0, BG=max(16, pow2(c.num_globals)),
    )


def _launch_onchip(c: _Call) -> None:
    """One program per (batch, head), the whole head on chip: it reads q, k, v (and the mask) and
    writes the output, nothing else."""
    q, N, DV = c.q, c.q.shape[2], c.v.shape[-1]
    mask, *mask_strides = c.mask_args()
    c.launch(
        _onchip_kernel, q.shape[0] * q.shape[1],
        q, c.k, c.v, c.out, mask, q.shape[1], N, c.b, c.m, c.pad_off,
        *q.stride(), *c.k.stride(), *c.v.stride(), *c.out.stride(), *mask_strides, c.scale,
        DV=DV, NUM_STEPS=c.num_steps, PRE=c.pad_type == "pre", BM=max(16, pow2(c.m)), BB=max(16, pow2(c.b)),
        BDV=max(16, pow2(DV)), BN=max(16, pow2(N)), **c.flags(), num_warps=c.plan.fused_warps,
    )


def _launch_select(c: _Call) -> None:
    """The global keys of each (sequence, head), one program each (``variants.py``)."""
    q, buf = c.q, c.buffers
    c.launch(_select_kernel, q.shape[0] * q.shape[1], q, c.k, buf["gscore"], buf["gsel"], buf["gflag"],
             *c.seq_args(q.shape[1]), c.num_globals, *q.stride(), *c.k.stride(), D=q.shape[-1], HAS_MASK=c.has_mask,
             BG=buf["gsel"].shape[1], BD=max(16, pow2(q.shape[-1])), **c.chained(c.has_mask), num_warps=4)


def _launch_exact(c: _Call) -> None:
    """Each query's exact column: its global keys, merged with its exact diagonal block."""
    q, DV, buf, rt = c.q, c.v.shape[-1], c.buffers, c.plan.r_step
    c.launch(_exact_kernel, q.shape[0] * q.shape[1] * rt.tiles, q, c.k, c.v, buf["exl"], buf["exy"], buf["gsel"],
             *c.seq_args(q.shape[1]), rt.tiles, c.num_globals, *q.stride(), *c.k.stride(), *c.v.stride(), c.scale,
             DV=DV, MERGE_DIAG=c.diag, GROUPED=rt.grouped, BQ=rt.rows, BG=buf["gsel"].shape[1], BDV=max(16, pow2(DV)),
             **c.flags(), **c.chained(True), num_warps=rt.warps)


def _capped(step) -> dict:
    """The launch option of a step's register cap (``plan._register_cap``), where it has one."""
    return {} if step.maxnreg is None else {"maxnreg": step.maxnreg}


def _launch_tiled(c: _Call, h0: int, h1: int) -> None:
    """Heads [h0, h1) of every sequence (all of them with the options): per step an R-step grid,
    then a summary L-step grid; the output L-step grid last. The first grid of a masked call may lay
    out the sequences."""
    q, k, v, out = c.heads(h0, h1) if (h0, h1) != (0, c.q.shape[1]) else (c.q, c.k, c.v, c.out)
    DV, buf = v.shape[-1], c.buffers
    BH = q.shape[0] * q.shape[1]
    seq_args, flags = c.seq_args(q.shape[1]), c.flags()
    rt, lt, st = c.plan.r_step, c.plan.l_step, c.plan.s_step  # R-steps, output L-step, summary L-steps
    mask, *mask_strides = c.mask_args()
    var = c.variant_args()
    # aL in the output (``LaunchPlan.al_home``): the R-step writes it there, the L-step reads it back.
    home = c.plan.al_home
    al = buf["spare" if home else "al"]
    spare = dict(spare_ptr=al, SPARE=al.shape[1] if home else 0, AL_HOME=home)
    if c.num_globals:
        _launch_select(c)
    for step in range(c.num_steps):
        last = step == c.num_steps - 1
        first = step == 0 and h0 == 0
        diag_now = c.diag and step == 0  # the first R-step's Y and log-sum-exp: the exact diagonal blocks
        c.launch(
            _r_step_kernel, BH * rt.tiles,
            q, k, v, buf["summ"], al, buf["cl"], buf["exy" if diag_now else "y"], *seq_args[:3], mask,
            *seq_args[3:], rt.tiles, *q.stride(), *k.stride(), *v.stride(), *mask_strides, c.scale,
            DV=DV, FROM_SUMMARY=step > 0, WANT_Y=last or diag_now, GROUPED=rt.grouped, ONE_COL=rt.one_col, BQ=rt.rows,
            BK=rt.cols, BDV=max(16, pow2(DV)), **flags, **_capped(rt),
            **c.chained(not first or (c.has_mask and not c.layout_in_grid) or c.num_globals > 0),
            num_warps=rt.warps, **var, GLOBAL=c.num_globals > 0, LSE_OUT=diag_now, o_ptr=out, **spare,
            stride_ob=out.stride(0), stride_oh=out.stride(1), stride_on=out.stride(2), stride_od=out.stride(3),
            **c.layout_flags(first and c.layout_in_grid, rt.warps),
        )
        if step == 0 and c.num_globals:
            _launch_exact(c)
        if not last:
            c.launch(
                _l_sum_kernel, BH * st.tiles,
                q, buf["al"], buf["cl"], buf["summ"], *seq_args, st.tiles, *q.stride(), c.scale,
                GROUPED=lt.grouped, ONE_COL=lt.one_col, BQ=st.rows, BK=st.cols, **flags, **_capped(st),
                **c.chained(True), num_warps=st.warps, ex_l_ptr=var["ex_l_ptr"], EXTRA=c.exact, EXACT_DIAG=c.diag,
            )
    l_tiles = c.plan.l_tiles(c.b)
    c.launch(
        _l_out_kernel, BH * l_tiles,
        q, al, buf["cl"], buf["y"], out, mask, *seq_args, l_tiles,
        *q.stride(), *out.stride(), *mask_strides, c.scale,
        DV=DV, GROUPED=lt.grouped, ONE_COL=lt.one_col, BQ=lt.rows, BK=lt.cols, BDV=max(16, pow2(DV)),
        **flags, **_capped(lt), **c.chained(True), num_warps=lt.warps,
        ex_l_ptr=var["ex_l_ptr"], ex_y_ptr=var["ex_y_ptr"], EXTRA=c.exact, EXACT_DIAG=c.diag, **spare,
    )
