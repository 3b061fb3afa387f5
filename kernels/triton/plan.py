"""How one call is tiled and launched: the strategy (on-chip, fused or tiled) and, per step kind,
the tile shape, programs per head and warps. Measurements behind each choice:
docs/benchmarks-log.md (variant numbers in brackets)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

MODES = ("fused", "tiles", "onchip")
# The on-chip kernel holds a head as (blocks x offsets) tiles of at most this many of each, padded
# (``onchip.py``), and head dims (q, k and v) of at most ONCHIP_WIDTH.
ONCHIP_EXTENT = 16
ONCHIP_WIDTH = 64
# Plans whose R- and (grouped) L-step tiles have at most this many rows keep aL in the output by
# default (``make_plan``).
AL_HOME_ROWS = 32
# Whether a GPU runs the on-chip kernel by default where it applies. Measured on an H100 (code
# 41f4a3e, float16, N = 256, graph replays): at 4 warps it beat the fused kernel by 1.27-1.38x at
# batch 64-4096 (T = 1), 1.49-1.61x at T = 2, 1.40x on a 30%-padded batch (docs/benchmarks-log.md,
# "The on-chip strategy"). ``Knobs(mode=...)`` picks another.
ONCHIP_BY_DEFAULT = True


@dataclass(frozen=True)
class Knobs:
    """Overrides of the launcher's choices, for benchmarks and tests (``None``: the launcher's).

    mode: ``"fused"``, ``"tiles"`` or ``"onchip"`` (where the on-chip kernel does not apply, the
    default of the other two). max_tile: cap on tile rows and columns. group_rows: rows of a tile of
    grouped blocks. max_rows: rows of a looped program. r_warps / l_warps / s_warps: warps of the
    R-step, final L-step and non-final L-step programs; s_rows: query rows per chunk of a non-final
    L-step. warps: warps of the fused or on-chip program. stages: software-pipelining depth.
    pdl: programmatic dependent launch between a call's grids. chunk_bytes: intermediates above which a
    call runs its heads in chunks (``heads_per_chunk``). layout_in_grid: a masked tiled call lays out
    its sequences in its first grid, not in a launch of its own (``layout_kernel.py``). al_home: a
    T = 1 inference call keeps aL in its output tensor (``LaunchPlan.al_home``): by default where the
    L-step's tiles hold whole offsets (grouped) and both steps' tiles have at most ``AL_HOME_ROWS``
    rows, True wherever an L-step program can own whole offsets (also where one program per offset
    loops over its rows), False never.
    """

    mode: Optional[str] = None
    max_tile: Optional[int] = None
    group_rows: Optional[int] = None
    max_rows: Optional[int] = None
    r_warps: Optional[int] = None
    l_warps: Optional[int] = None
    s_rows: Optional[int] = None
    s_warps: Optional[int] = None
    warps: Optional[int] = None
    stages: Optional[int] = None
    maxnreg: Optional[int] = None
    pdl: Optional[bool] = None
    chunk_bytes: Optional[int] = None
    layout_in_grid: Optional[bool] = None
    al_home: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class StepTiles:
    """Programs of one step kind. grouped: ``rows // extent`` whole blocks (offsets) packed into one
    tile, with a block-diagonal mask; otherwise a block spans several programs of ``rows`` rows.
    one_col: a program's columns fit one tile (no loop in its body). maxnreg: the programs' cap on
    registers per thread (None: ptxas chooses)."""

    grouped: bool
    rows: int
    cols: int
    tiles: int  # programs per head
    one_col: bool
    warps: int
    maxnreg: Optional[int] = None


@dataclass(frozen=True)
class LaunchPlan:
    """r_step: R-steps; l_step: the final L-step (output); s_step: non-final L-steps (summaries).
    al_home: the R-step writes aL into the output tensor, each row at its token's position, and the
    L-step overwrites it with that token's output (``stages._al_rows``): no aL in the scratch, whose
    peak then is Y and cL (0.26x the bytes of q, k, v and the output instead of 0.51x). It needs the
    tiled strategy at T = 1 (no summary step reads aL) without the options, an inference call (a
    training call keeps aL for its backward) and an L-step program that owns whole offsets with all
    their blocks in one column tile (grouped, or ``l_step.one_col``: then one program per offset,
    ``l_tiles``, only with ``Knobs(al_home=True)``); the launcher also needs an output of its own and
    aL no wider than an output row (``launch.plan_for``)."""

    mode: str
    r_step: StepTiles
    l_step: StepTiles
    s_step: StepTiles
    fused_warps: int  # of the one program per head: fused or on-chip
    stages: Optional[int]
    pdl: bool
    layout_in_grid: bool
    al_home: bool = False

    def l_tiles(self, b: int) -> int:
        """Final L-step programs per head: one per offset where aL is in the output and an offset
        spans several tiles."""
        return b if self.al_home and not self.l_step.grouped else self.l_step.tiles


def pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def _tiling(x: int, width: int, max_tile: Optional[int], group_rows: Optional[int], max_rows: int):
    """(grouped, rows, columns) for rows of extent x (b for the R-step, m for the L-step).
    Small extents are grouped into one square tile of up to ``group_rows`` rows; larger ones get
    ``max_rows`` rows per program and loop over column tiles. 32-row tiles (with 2 warps) beat
    64-row ones for head dims up to 64 (21); 128 x 128 tiles at b = 128 spilled (9)."""
    cap = max_tile if max_tile is not None else (128 if width <= 128 else 64)
    if group_rows is None:
        group_rows = 32 if width <= 64 else 64
    p = max(16, pow2(x))
    if p <= min(cap, max_rows):
        tile = max(p, min(group_rows, cap))
        return True, tile, tile
    return False, min(max_rows, cap), min(p, cap)


def _warps(tile: int, width: int) -> int:
    if tile * width <= 32 * 64:
        return 2  # small tiles: more programs per SM (21)
    return 8 if tile * width >= 128 * 128 else 4


def _register_cap(grouped: bool, rows: int, warps: int, width: int, ieee: bool) -> Optional[int]:
    """Registers per thread of a step's programs (None: as ptxas chooses). Grouped 64-row tiles of
    4 warps (extents 33-64: N' from about 1100 to 4096 at b = ceil(sqrt N)) ran at 140-168 registers,
    3 programs per SM; capped at 128, 4 fit, for a few spilled bytes: -2% to -8% at N = 4096 (H100,
    batch 1 and 8, with and without a mask; docs/benchmarks-log.md, variant 26). Where a block spans
    several 64-row programs (N = 16384) the cap spilled 56-256 bytes: +15% at T = 1, +41% at T = 2;
    on 2-warp tiles (N = 512) +6%."""
    return 128 if grouped and rows == 64 and warps == 4 and width <= 64 and not ieee else None


def _step(extent: int, other: int, width: int, knobs: Knobs, warps: Optional[int], ieee: bool = False) -> StepTiles:
    """Tiles over ``other`` groups of ``extent`` rows (R-step: m blocks of b; L-step: b offsets of m)."""
    # 64-row programs: 128-row ones were 33-37% slower at T = 1, N = 8192 / 16384 (H100).
    rows_cap = knobs.max_rows if knobs.max_rows is not None else 64
    grouped, rows, cols = _tiling(extent, width, knobs.max_tile, knobs.group_rows, rows_cap)
    tiles = -(-other // (rows // extent)) if grouped else other * -(-extent // rows)
    warps = warps if warps is not None else _warps(rows, width)
    cap = _register_cap(grouped, rows, warps, width, ieee) if knobs.maxnreg is None else knobs.maxnreg or None
    return StepTiles(grouped, rows, cols, tiles, grouped or cols >= extent, warps, cap)


def _fused_pays(bh: int, n_pad: int, num_steps: int, sm_count: Optional[int]) -> bool:
    """One program per head pays at T = 1 on N' <= 512 with many heads (at least 4 per SM);
    it is slower beyond, and at T = 2 (21)."""
    return sm_count is not None and num_steps == 1 and n_pad <= 512 and bh >= 4 * sm_count


def onchip_fits(b: int, m: int, width: int) -> bool:
    """Whether the on-chip kernel holds a head: blocks and offsets padded to at most
    ``ONCHIP_EXTENT`` each (N' <= 256), head dims up to ``ONCHIP_WIDTH``."""
    return pow2(b) <= ONCHIP_EXTENT and pow2(m) <= ONCHIP_EXTENT and width <= ONCHIP_WIDTH


def _onchip_warps(bh: int, sm_count: Optional[int]) -> int:
    """Warps of the on-chip program (H100, float16, d = 64, N = 256, graph replays, code 41f4a3e):
    with fewer heads than SMs 16 warps were fastest (batch 8: 16.3 µs against 17.0 at 8 warps and
    18.9 at 4); with more, 4 warps (two programs per SM, small spills) beat 8 by 1.19-1.29x (batch
    64-4096) and 16 by 1.14-1.24x: overlap between programs pays more than the spills cost."""
    if sm_count is not None and bh <= sm_count:
        return 16
    return 4


def _mode(knobs: Knobs, onchip: bool, bh: int, n_pad: int, num_steps: int, sm_count: Optional[int],
          ieee: bool) -> str:
    """The strategy: ``knobs.mode`` where it applies, else the default. With ``ONCHIP_BY_DEFAULT``
    the on-chip kernel is the default wherever it applies on a GPU, but for float32 inputs
    (``ieee``: its 3D dots then run on the FMA units, and compiled for sm_90 it spilled 9.8 KB per
    thread); its timing: docs/benchmarks-log.md, "The on-chip strategy"."""
    fallback = "fused" if _fused_pays(bh, n_pad, num_steps, sm_count) else "tiles"
    by_default = ONCHIP_BY_DEFAULT and knobs.mode is None and sm_count is not None and not ieee
    if knobs.mode == "onchip" or by_default:
        return "onchip" if onchip else fallback
    return knobs.mode or fallback


def make_plan(bh: int, b: int, m: int, width: int, num_steps: int, sm_count: Optional[int], pdl: bool,
              knobs: Knobs = Knobs(), plain: bool = False, ieee: bool = False) -> LaunchPlan:
    """The plan for ``bh`` heads of blocks of ``b`` slots, ``m`` blocks, head width ``width`` (the
    padded head dim); ``sm_count`` is None off CUDA (the interpreter), where the tiled strategy runs
    unless ``knobs`` say otherwise. ``plain``: an inference call without the op's options, the only
    calls the on-chip kernel runs (a training call keeps ``aL, cL, Y`` in memory for its backward);
    ``ieee``: float32 inputs."""
    r = _step(b, m, width, knobs, knobs.r_warps, ieee)
    lo = _step(m, b, width, knobs, knobs.l_warps, ieee)
    # Non-final L-steps: a program sums over all the queries of its columns, so where a sequence's
    # blocks fit one column tile, its columns are all of them (one pass, no recomputed statistics).
    s_cols = lo.cols if lo.one_col else lo.rows
    s = replace(lo, rows=lo.rows if lo.grouped or knobs.s_rows is None else knobs.s_rows, cols=s_cols,
                tiles=lo.tiles if lo.grouped else b * -(-m // s_cols),
                warps=knobs.s_warps if knobs.s_warps is not None else lo.warps)
    mode = _mode(knobs, plain and onchip_fits(b, m, width), bh, m * b, num_steps, sm_count, ieee)
    if knobs.warps is not None:
        fused_warps = knobs.warps
    else:
        fused_warps = _onchip_warps(bh, sm_count) if mode == "onchip" else max(r.warps, lo.warps)
    in_grid = knobs.layout_in_grid
    if in_grid is None:
        in_grid = mode == "tiles" and _one_wave(bh * r.tiles, sm_count)
    # aL in the output (docs/benchmarks-log.md, variants 23 and 29; H100): with both steps on tiles
    # of at most 32 rows (N <= 1024 at b = ceil(sqrt N)) -4% to +1%, so on by default there; with
    # 64-row tiles (N about 1025-4096) +6% to +20% at N = 1536-3600 (batch 1, 8 and 64), about +1% at
    # 4096, where b = 64 fills the tiles (the same kernels spill 24 B and 16 B under the cap at both
    # N, none without aL in the output), so only on request. Where an offset's rows span
    # several L-step tiles, one program per offset loops over them: +3.5-3.8% at N = 16384 and
    # +7.0-8.5% at 8192, batch 1 (two runs), also only on request.
    if knobs.al_home is True:
        home_fits = lo.grouped or lo.one_col
    else:
        home_fits = lo.grouped and max(r.rows, lo.rows) <= AL_HOME_ROWS
    al_home = knobs.al_home is not False and plain and mode == "tiles" and num_steps == 1 and home_fits
    return LaunchPlan(mode, r, lo, s, fused_warps, knobs.stages, pdl if knobs.pdl is None else knobs.pdl, in_grid,
                      al_home)


def _one_wave(programs: int, sm_count: Optional[int]) -> bool:
    """A masked call lays out its sequences inside its first grid when that grid is about one wave
    (8 programs per SM): it saves a launch, while each program's pass over its mask row adds its
    latency once. On larger grids that latency adds up wave after wave (+9% to +17% at batch 8,
    N = 4096, H200), and a launch of its own costs less."""
    return sm_count is None or programs <= 8 * sm_count


# Intermediates of at most this many bytes run all heads at once. Each chunk adds a grid boundary
# (about 2 µs on an H200: +8% at N = 16384, batch 1, with 32 MiB here), so only very large calls pay it.
CHUNK_BYTES = 1 << 30


def heads_per_chunk(heads: int, scratch_bytes: int, io_bytes: int, knobs: Knobs = Knobs()) -> int:
    """Heads of every sequence that one chunk of a tiled call runs. ``scratch_bytes``: the call's
    intermediates with all heads at once (aL and Y alone are half the bytes of q, k, v and the output:
    peak memory 1.5x of those; Y alone where aL lies in the output, ``LaunchPlan.al_home``);
    ``io_bytes``: the bytes of q, k, v and the output. Above
    ``chunk_bytes`` the heads run in chunks whose intermediates fit a fifth of ``io_bytes`` (peak 1.2x),
    each chunk reusing the same scratch."""
    limit = knobs.chunk_bytes if knobs.chunk_bytes is not None else CHUNK_BYTES
    if scratch_bytes <= limit:
        return heads
    chunks = -(-5 * scratch_bytes // max(1, io_bytes))
    return max(1, -(-heads // chunks))
