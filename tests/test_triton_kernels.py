"""The Triton kernels against the PyTorch reference, on the CPU through Triton's interpreter.

Triton picks its interpreter when it is first imported (``TRITON_INTERPRET=1``), and transformers
imports it early, so ``tests/conftest.py`` sets the variable on machines without CUDA; these tests
skip (saying why) if the interpreter is off. bfloat16 is left to the GPU tests (the
interpreter of triton 3.9 computes garbage for it). Every output is poisoned with NaN before the
call, and so are the kernels' intermediate buffers (``poison=True``): a read or a write that is missing
shows up as NaN, and numpy's "invalid value" warnings (NaN made inside a dot) fail the test.
"""

from __future__ import annotations

import importlib
import math
import zlib

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from masks import key_padding_mask  # noqa: E402
from test_op import EXTREME, check_extreme_hull, check_tied_logits_average_v  # noqa: E402

from monarch_convert.kernels import ops  # noqa: E402
from monarch_convert.kernels.layout import sequence_layout  # noqa: E402
from monarch_convert.kernels.reference import monarch_attention_torch  # noqa: E402
from monarch_convert.kernels.triton import layout_kernel  # noqa: E402
from monarch_convert.kernels.triton.plan import Knobs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

TOL = {torch.float32: 2e-5, torch.float16: 4e-3}


def _interpreting() -> bool:
    import triton.language as tl

    return "Interpreted" in type(tl.zeros).__name__


@pytest.fixture(scope="module", autouse=True)
def kern():
    if not _interpreting():
        pytest.skip("Triton's interpreter is off: export TRITON_INTERPRET=1 before triton is first "
                    "imported (tests/conftest.py does it on machines without CUDA)")
    from monarch_convert.kernels.triton import common, fused, launch, layout_kernel, onchip, stages, tiled

    if "Interpreted" not in type(tiled._r_step_kernel).__name__:
        # importers after what they import
        for module in (common, stages, tiled, fused, layout_kernel, onchip, launch):
            importlib.reload(module)
    return launch


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(B, H, N, d, dv, dtype, layout="bhnd", gen=None):
    def make(dim):
        if layout == "bnhd":  # what transformers passes: (B, N, H, d) transposed
            return torch.randn(B, N, H, dim, generator=gen).to(dtype).transpose(1, 2)
        if layout == "gapped":  # last dim strided too
            return torch.randn(B, H, N, 2 * dim, generator=gen).to(dtype)[..., ::2]
        return torch.randn(B, H, N, dim, generator=gen).to(dtype)

    return make(d), make(d), make(dv)


def _reference(q, k, v, mask, b, T, pad, variant=(False, 0)):
    B, _, N, _ = q.shape
    lay = sequence_layout(mask, B, N, b, pad, q.device)
    return monarch_attention_torch(q.float(), k.float(), v.float(), lay, b, T, q.shape[-1] ** -0.5, *variant)


def _run(kern, q, k, v, mask, b, T, pad, knobs=None, mode="tiles", scale=None, variant=(False, 0)):
    """``variant``: the op's options (exact_diagonal, global_keys)."""
    out = torch.full((*q.shape[:3], v.shape[-1]), float("nan"), dtype=q.dtype)
    kern.monarch_attention_triton(q, k, v, mask, b, T, pad, scale or q.shape[-1] ** -0.5, out=out,
                                  poison=True, knobs=Knobs(mode=mode, **(knobs or {})),
                                  exact_diagonal=variant[0], global_keys=variant[1])
    return out




# (B, H, N, d, dv, b, T, pad, mask, dtype, layout, kernel knobs)
CASES = [
    # any N, any b: N not a multiple of b, b = 1, b = N, b > N
    (2, 2, 37, 16, 16, 5, 1, "post", None, torch.float32, "bhnd", {}),
    (2, 2, 37, 16, 16, 5, 1, "pre", None, torch.float32, "bhnd", {}),
    (1, 2, 29, 16, 16, 1, 1, "post", None, torch.float32, "bhnd", {}),
    (1, 2, 29, 16, 16, 29, 2, "pre", None, torch.float32, "bhnd", {}),
    (1, 2, 23, 16, 16, 40, 1, "post", "right", torch.float32, "bhnd", {}),
    (2, 1, 64, 32, 32, 8, 1, "post", None, torch.float16, "bhnd", {}),
    # steps
    (2, 2, 45, 16, 16, 7, 2, "post", "random", torch.float32, "bhnd", {}),
    (2, 2, 45, 16, 16, 7, 3, "pre", "random", torch.float16, "bhnd", {}),
    # masks, both pad types
    (3, 2, 50, 16, 16, 6, 1, "pre", "left", torch.float32, "bhnd", {}),
    (3, 2, 50, 16, 16, 6, 2, "post", "right", torch.float16, "bhnd", {}),
    (3, 1, 30, 16, 16, 4, 2, "pre", "empty_row", torch.float32, "bhnd", {}),
    # head dims incl. non-powers of two, dv != d, d up to 256
    (1, 2, 40, 72, 72, 6, 1, "post", "random", torch.float16, "bhnd", {}),
    (1, 2, 40, 80, 48, 6, 2, "pre", None, torch.float16, "bhnd", {}),
    (1, 1, 33, 96, 128, 5, 1, "post", "right", torch.float32, "bhnd", {}),
    (1, 1, 33, 256, 64, 5, 2, "post", None, torch.float16, "bhnd", {}),
    (1, 1, 20, 16, 256, 4, 1, "pre", None, torch.float32, "bhnd", {}),
    # strided inputs: transformers' transposed view, and a strided last dim
    (2, 3, 41, 64, 64, 7, 1, "pre", "random", torch.float16, "bnhd", {}),
    (2, 2, 41, 24, 40, 7, 2, "post", "left", torch.float32, "gapped", {}),
    # looped regimes (b > tile: R-step over key tiles; m > tile: L-step over block tiles)
    (2, 1, 70, 16, 16, 20, 1, "pre", "random", torch.float32, "bhnd", {"max_tile": 16}),
    (2, 1, 70, 16, 16, 20, 2, "post", "left", torch.float16, "bhnd", {"max_tile": 16}),
    (2, 1, 70, 16, 24, 3, 2, "post", "right", torch.float32, "bhnd", {"max_tile": 16}),
    (2, 1, 70, 16, 16, 3, 3, "pre", "random", torch.float16, "bhnd", {"max_tile": 16}),
    (1, 2, 33, 16, 16, 40, 2, "pre", "random", torch.float32, "bhnd", {"max_tile": 16}),
    (1, 1, 50, 16, 16, 1, 2, "post", None, torch.float32, "bhnd", {"max_tile": 16}),
    # programs of fewer rows than a block (offset) holds: row tiles x wider column tiles
    (2, 1, 70, 16, 16, 20, 2, "pre", "random", torch.float32, "bhnd", {"max_rows": 16}),
    (2, 2, 70, 16, 16, 3, 1, "post", "right", torch.float16, "bhnd", {"max_rows": 16}),
    (1, 2, 33, 16, 16, 40, 2, "post", None, torch.float32, "bhnd", {"max_rows": 16, "max_tile": 32}),
    # many tiles per head, some past a short sequence's own count
    (3, 2, 50, 16, 16, 6, 2, "pre", "right", torch.float32, "bhnd", {"group_rows": 16}),
    (2, 2, 70, 16, 16, 4, 1, "post", "random", torch.float16, "bhnd", {"group_rows": 16}),
    (2, 1, 70, 16, 16, 20, 3, "pre", "left", torch.float32, "bhnd", {"max_rows": 16}),
    # non-final L-step over all of a sequence's blocks in one column tile, queries in row chunks
    (2, 2, 70, 16, 16, 3, 2, "pre", "left", torch.float16, "bhnd", {"max_rows": 16}),
    (1, 2, 140, 16, 16, 3, 2, "post", "random", torch.float32, "bhnd", {"max_rows": 32, "s_rows": 16}),
]


def _case_id(case) -> str:
    return "-".join(str(x).replace("torch.", "").replace(" ", "").replace("'", "") for x in case)


@pytest.mark.parametrize("mode", ["tiles", "fused"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_reference(kern, case, mode):
    """Both kernel paths: a program per tile (two launches per step), and one program per head."""
    B, H, N, d, dv, b, T, pad, mask_kind, dtype, lay, knobs = case
    gen = torch.Generator().manual_seed(zlib.crc32(f"{_case_id(case)}-{mode}".encode()))
    q, k, v = _inputs(B, H, N, d, dv, dtype, lay, gen)
    mask = key_padding_mask(mask_kind, B, N, gen)
    _check_output(_run(kern, q, k, v, mask, b, T, pad, knobs, mode), q, k, v, mask, b, T, pad)


def _check_output(out, q, k, v, mask, b, T, pad) -> None:
    """``out`` is finite, in q's dtype, the reference's within tolerance and zero at padding tokens."""
    assert torch.isfinite(out).all(), "NaN/Inf or unwritten output"
    assert out.dtype == q.dtype
    assert _rel(out, _reference(q, k, v, mask, b, T, pad)) < TOL[q.dtype]
    if mask is not None:
        B, H, N = q.shape[:3]
        assert (out[~mask[:, None, :].expand(B, H, N)] == 0).all()


# aL in the output tensor (``LaunchPlan.al_home``): T = 1 inference calls whose output the launcher
# allocates. (B, H, N, d, dv, b, pad, mask, dtype, layout, knobs).
AL_HOME_CASES = [
    # grouped L-step tiles: several offsets per program
    (2, 2, 37, 16, 16, 5, "post", None, torch.float32, "bhnd", {}),
    (2, 2, 37, 16, 16, 5, "pre", None, torch.float16, "bnhd", {}),
    (2, 2, 36, 16, 16, 6, "post", None, torch.float32, "bhnd", {}),  # b divides N: no spare rows
    (3, 2, 50, 16, 16, 6, "pre", "left", torch.float32, "bhnd", {}),
    (3, 1, 30, 16, 16, 4, "post", "empty_row", torch.float32, "bhnd", {}),
    (2, 2, 45, 24, 40, 7, "post", "random", torch.float32, "gapped", {}),
    # one program per offset, its rows in chunks (m = 24 > 16 rows), incl. slots without a token
    (2, 2, 70, 16, 16, 3, "post", "right", torch.float16, "bhnd", {"max_rows": 16}),
    (2, 1, 70, 16, 24, 3, "pre", "random", torch.float32, "bnhd", {"max_rows": 16}),
    (2, 2, 70, 16, 16, 3, "pre", None, torch.float32, "bhnd", {"max_rows": 16}),
]


@pytest.mark.parametrize("case", AL_HOME_CASES, ids=_case_id)
def test_al_in_output_matches_reference(kern, case):
    """The R-step writes aL at its tokens' output rows (and spare rows for slots without a token),
    the L-step reads every aL of its offsets before it overwrites them with outputs: the reference's
    outputs, zeros at padding tokens, and the same as with aL in the scratch (all intermediates
    poisoned); its launches can be replayed."""
    B, H, N, d, dv, b, pad, mask_kind, dtype, lay, knobs = case
    gen = torch.Generator().manual_seed(zlib.crc32(f"{_case_id(case)}-home".encode()))
    q, k, v = _inputs(B, H, N, d, dv, dtype, lay, gen)
    mask = key_padding_mask(mask_kind, B, N, gen)
    call = kern._launch_call(q, k, v, mask, b, -(-N // b), 1, pad, d ** -0.5, None,
                             Knobs(mode="tiles", al_home=True, **knobs), True, (False, 0), True, False)
    assert call.plan.al_home and "al" not in call.buffers
    # Every pointer a launch takes is one of the call's tensors (the output) or inside its scratch:
    # replays apply (an empty spare-row buffer, where b divides N, once gave an offset of -scratch).
    where = [call.pointer_of(a) for _, _, args in call.recording for a in args if isinstance(a, torch.Tensor)]
    assert all(w is not None and 0 <= w[1] <= call.scratch_bytes for w in where)
    out = call.out
    _check_output(out, q, k, v, mask, b, 1, pad)
    assert _rel(out, _run(kern, q, k, v, mask, b, 1, pad, knobs)) < TOL[dtype]


def test_al_in_output_only_where_it_applies(kern):
    """aL stays in the scratch for training calls, from T = 2 (the summary steps read it), with the
    options, in the fused strategy, where an offset's blocks span several column tiles, with a
    caller's output (it may alias q, k or v) and where aL is wider than an output row. Where an
    offset's rows span several L-step tiles, one program per offset runs them, only with
    ``Knobs(al_home=True)``. Where it applies, the scratch is Y and cL (and spare rows): about half
    of what it was."""
    gen = torch.Generator().manual_seed(24)
    q, k, v = _inputs(2, 2, 64, 16, 16, torch.float32, gen=gen)

    def call(T=1, out=None, keep=False, variant=(False, 0), **knobs):
        knobs = {"mode": "tiles", "al_home": True, **knobs}
        return kern._launch_call(q, k, v, None, 8, 8, T, "post", 0.25, out, Knobs(**knobs), True, variant, False, keep)

    home = call()
    assert home.plan.al_home and home.scratch_bytes <= 0.55 * call(al_home=False).scratch_bytes
    assert call(al_home=None).plan.al_home  # the default where the L-step's tiles hold whole offsets
    looped = call(max_rows=4)
    assert looped.plan.al_home and looped.plan.l_tiles(8) == 8 and not looped.plan.l_step.grouped
    for off in (call(T=2), call(keep=True), call(variant=(False, 2)), call(mode="fused"), call(max_tile=4),
                call(out=torch.empty_like(q)), call(al_home=None, max_rows=4), call(al_home=False)):
        assert not off.plan.al_home and "al" in off.buffers
    # aL wider than an output row (d > dv) stays in the scratch, and the outputs stay right.
    v = v[..., :8].contiguous()
    narrow = call()
    assert not narrow.plan.al_home and "al" in narrow.buffers
    _check_output(narrow.out, q, k, v, None, 8, 1, "post")


def test_spare_rows_hold_every_slot_without_a_token(kern):
    """A sequence's blocks hold fewer than b slots without a token: exactly m * b - N without a mask."""
    assert [kern.spare_rows(N, 8, -(-N // 8), False) for N in (64, 65, 71)] == [0, 7, 1]
    assert kern.spare_rows(65, 8, 9, True) == 8


# The op's options (docs/algorithm.md, section 7): (B, H, N, d, dv, b, T, pad, mask, dtype, layout, knobs).
VARIANT_CASES = [
    (2, 2, 37, 16, 16, 5, 1, "post", None, torch.float32, "bhnd", {}),
    (2, 2, 45, 16, 16, 7, 2, "pre", "random", torch.float16, "bhnd", {}),
    (3, 2, 50, 16, 16, 6, 3, "post", "right", torch.float32, "bhnd", {}),
    (3, 1, 30, 16, 16, 4, 2, "pre", "empty_row", torch.float32, "bhnd", {}),
    (2, 3, 41, 64, 40, 7, 2, "pre", "left", torch.float16, "bnhd", {}),
    # looped R-step (b = 20 > 16) and looped L-steps (m = 24 > 16), row chunks of the summaries
    (2, 1, 70, 16, 16, 20, 2, "pre", "random", torch.float32, "bhnd", {"max_tile": 16}),
    (2, 1, 70, 16, 24, 3, 3, "post", "right", torch.float16, "bhnd", {"max_tile": 16}),
    (1, 2, 70, 16, 16, 3, 2, "post", "random", torch.float32, "bhnd", {"max_rows": 32, "s_rows": 16}),
]
# (mode, variant): each option alone and both in the tiled path; the fused one runs the same tile
# functions, with both on.
VARIANTS = [("tiles", (True, 0)), ("tiles", (False, 3)), ("tiles", (True, 3)), ("fused", (True, 3))]


@pytest.mark.parametrize("mode,variant", VARIANTS, ids=lambda x: x if isinstance(x, str) else f"diag{x[0]:d}-G{x[1]}")
@pytest.mark.parametrize("case", VARIANT_CASES, ids=_case_id)
def test_options_match_reference(kern, case, mode, variant):
    """Exact diagonal blocks and global keys, alone and together."""
    B, H, N, d, dv, b, T, pad, mask_kind, dtype, lay, knobs = case
    gen = torch.Generator().manual_seed(zlib.crc32(f"{_case_id(case)}-{mode}-{variant}".encode()))
    q, k, v = _inputs(B, H, N, d, dv, dtype, lay, gen)
    mask = key_padding_mask(mask_kind, B, N, gen)
    out = _run(kern, q, k, v, mask, b, T, pad, knobs, mode, variant=variant)
    ref = _reference(q, k, v, mask, b, T, pad, variant)
    assert torch.isfinite(out).all(), "NaN/Inf or unwritten output"
    assert _rel(out, ref) < TOL[dtype]
    if T > 1 or variant[1]:  # the option changed something (exact diagonal blocks alone: from T = 2 on)
        assert _rel(out, _reference(q, k, v, mask, b, T, pad)) > 10 * TOL[dtype]
    if mask is not None:
        assert (out[~mask[:, None, :].expand(B, H, N)] == 0).all()


@pytest.mark.parametrize("T", [1, 2, 3])
@pytest.mark.parametrize("exact_diagonal", [False, True])
def test_global_keys_for_every_real_token_is_softmax(kern, exact_diagonal, T):
    gen = torch.Generator().manual_seed(30 + T)
    q, k, v = _inputs(3, 2, 24, 16, 16, torch.float32, gen=gen)
    mask = torch.arange(24)[None, :] < torch.tensor([24, 7, 5])[:, None]
    out = _run(kern, q, k, v, mask, 4, T, "pre", variant=(exact_diagonal, 7))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    for s in (1, 2):  # at most 7 real tokens: every one is a global key
        torch.testing.assert_close(out[s][:, mask[s]], want[s][:, mask[s]], rtol=1e-5, atol=1e-6)
    assert (out[~mask[:, None, :].expand(3, 2, 24)] == 0).all()


def test_exact_diagonal_at_one_step_is_the_published_kernels(kern):
    gen = torch.Generator().manual_seed(33)
    q, k, v = _inputs(2, 2, 30, 16, 16, torch.float16, gen=gen)
    mask = key_padding_mask("random", 2, 30, gen)
    for mode in ("tiles", "fused"):
        assert torch.equal(_run(kern, q, k, v, mask, 4, 1, "post", mode=mode, variant=(True, 2)),
                           _run(kern, q, k, v, mask, 4, 1, "post", mode=mode, variant=(False, 2)))


# The on-chip kernel (N' <= 256, head dims <= 64): (B, H, N, d, dv, b, T, pad, mask, dtype, layout).
ONCHIP_CASES = [
    # 16 blocks of 16 (N' = 256), every step count
    (2, 3, 256, 32, 32, 16, 1, "post", None, torch.float32, "bhnd"),
    (2, 3, 256, 64, 64, 16, 2, "pre", None, torch.float16, "bnhd"),
    (2, 3, 256, 32, 32, 16, 3, "post", "right", torch.float16, "gapped"),
    # fewer, non-power-of-two blocks and offsets: b = m = 10; b = 16, m = 13 (N' = 208 > N)
    (2, 3, 100, 32, 32, 10, 1, "pre", None, torch.float16, "bnhd"),
    (2, 3, 100, 64, 64, 10, 3, "pre", "left", torch.float32, "bhnd"),
    (2, 3, 200, 64, 64, 16, 1, "post", "random", torch.float16, "bnhd"),
    (2, 3, 200, 32, 32, 16, 2, "pre", "random", torch.float32, "gapped"),
    (3, 3, 200, 64, 64, 16, 2, "post", "left", torch.float16, "bhnd"),
    # dv != d, head dims below their padding; one block (b = N); single-slot blocks (b = 1)
    (2, 3, 150, 40, 24, 12, 2, "pre", "random", torch.float32, "bnhd"),
    (3, 2, 12, 16, 16, 12, 2, "post", "right", torch.float32, "bhnd"),
    (2, 2, 16, 16, 16, 1, 2, "pre", "random", torch.float16, "bhnd"),
    (3, 2, 30, 16, 16, 4, 2, "pre", "empty_row", torch.float32, "bhnd"),
]


def _launched(kern, monkeypatch) -> list:
    """The kernels each later call launches, in order."""
    launched, launch = [], kern._Call.launch

    def spy(self, kernel, grid, *args, **kwargs):
        launched.append(kernel)
        return launch(self, kernel, grid, *args, **kwargs)

    monkeypatch.setattr(kern._Call, "launch", spy)
    return launched


@pytest.mark.parametrize("case", ONCHIP_CASES, ids=_case_id)
def test_onchip_matches_reference(kern, case, monkeypatch):
    """One program per head, the whole head in registers: one launch (no layout launch with a mask,
    no scratch), the reference's outputs and zeros at padding tokens."""
    B, H, N, d, dv, b, T, pad, mask_kind, dtype, lay = case
    gen = torch.Generator().manual_seed(zlib.crc32(f"{_case_id(case)}-onchip".encode()))
    q, k, v = _inputs(B, H, N, d, dv, dtype, lay, gen)
    mask = key_padding_mask(mask_kind, B, N, gen, short_last=mask_kind == "right")
    launched = _launched(kern, monkeypatch)
    out = _run(kern, q, k, v, mask, b, T, pad, mode="onchip")
    assert launched == [kern._onchip_kernel]
    _check_output(out, q, k, v, mask, b, T, pad)


def test_onchip_only_where_it_applies(kern, monkeypatch):
    """Asked for where it does not apply (N' > 256, head dims above 64, the op's options from T = 2),
    the launcher runs its default strategy instead; exact diagonal blocks at T = 1 change nothing
    (docs/algorithm.md, section 7): the on-chip kernel runs them."""
    gen = torch.Generator().manual_seed(21)
    launched = _launched(kern, monkeypatch)
    for N, d, b, T, variant, on in ((300, 16, 16, 1, (False, 0), False), (64, 80, 8, 1, (False, 0), False),
                                    (64, 16, 8, 2, (True, 0), False), (64, 16, 8, 1, (False, 2), False),
                                    (64, 16, 8, 1, (True, 0), True)):
        q, k, v = _inputs(1, 2, N, d, d, torch.float32, gen=gen)
        launched.clear()
        out = _run(kern, q, k, v, None, b, T, "post", mode="onchip", variant=variant)
        assert (kern._onchip_kernel in launched) == on, (N, d, variant)
        assert _rel(out, _reference(q, k, v, None, b, T, "post", variant)) < TOL[torch.float32]


def test_onchip_call_takes_only_its_own_tensors(kern):
    """Every pointer of the on-chip launch is one of the call's tensors (what ``replay.py`` puts
    back), with no scratch: a replay allocates none."""
    gen = torch.Generator().manual_seed(22)
    q, k, v = _inputs(2, 3, 50, 16, 16, torch.float32, "bnhd", gen)
    mask = key_padding_mask("random", 2, 50, gen)
    for m in (None, mask):
        call = kern._launch_call(q, k, v, m, 5, 10, 2, "pre", 0.25, None, Knobs(mode="onchip"), False, (False, 0),
                                 True, False)
        (kernel, grid, args), = call.recording
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        assert grid == 6 and call.scratch_bytes == 0 and not call.saves and len(tensors) == 5
        # q, k, v, the output and the mask (q in its place without one)
        assert {call.pointer_of(t) for t in tensors} == {(i, 0) for i in range(4 if m is None else 5)}


def test_training_calls_never_run_onchip(kern, monkeypatch):
    """On a GPU (here: 132 SMs made up) with the on-chip kernel on by default, inference calls at
    N' <= 256 run it; a training call, which keeps aL, cL, Y for its backward, runs the others."""
    monkeypatch.setattr(kern.plan_module, "ONCHIP_BY_DEFAULT", True)
    make_plan = kern.make_plan
    monkeypatch.setattr(kern, "make_plan", lambda *a, **kw: make_plan(*a[:5], 132, *a[6:], **kw))
    gen = torch.Generator().manual_seed(23)
    q, k, v = _inputs(2, 3, 64, 16, 16, torch.float16, gen=gen)
    launched = _launched(kern, monkeypatch)
    for T in (1, 2):
        kern.REPLAYS.clear()
        launched.clear()
        out = kern.monarch_attention_triton(q, k, v, None, 8, T, "post", 0.25, knobs=Knobs())
        assert launched == [kern._onchip_kernel]
        launched.clear()
        kept, saved = kern.monarch_attention_triton_saving(q, k, v, None, 8, T, "post", 0.25)
        assert launched and kern._onchip_kernel not in launched
        assert (0 if saved is None else saved.numel()) == kern.saved_bytes(q, v, 8, T, False)
        assert _rel(out, kept) < TOL[torch.float16]


def test_plan_picks_onchip_on_gpus_where_it_applies(kern, monkeypatch):
    """With ``ONCHIP_BY_DEFAULT`` (on; off, only ``Knobs(mode="onchip")`` runs it), the default on a
    GPU (an SM count) for inference calls at N' <= 256 and head dims <= 64, at any T and batch, in
    half precision; the other strategies elsewhere, for training calls, float32 inputs and off CUDA;
    ``Knobs(mode=)`` overrides it. 16 warps with fewer heads than SMs, else 4."""
    def plan(b, m, width=64, T=1, sm=132, plain=True, bh=768, ieee=False, **knobs):
        return kern.plan_module.make_plan(bh, b, m, width, T, sm, True, Knobs(**knobs), plain=plain, ieee=ieee)

    assert kern.plan_module.ONCHIP_BY_DEFAULT
    monkeypatch.setattr(kern.plan_module, "ONCHIP_BY_DEFAULT", False)
    assert plan(16, 16).mode == "fused" and plan(16, 16, mode="onchip").mode == "onchip"
    monkeypatch.setattr(kern.plan_module, "ONCHIP_BY_DEFAULT", True)
    for args in ((16, 16), (16, 16, 64, 2), (14, 15, 64, 3), (10, 10, 32, 1, 132, True, 8), (1, 16), (12, 1)):
        assert plan(*args).mode == "onchip", args
    assert plan(22, 22).mode == plan(16, 16, plain=False).mode == "fused"  # N' = 484; a training call
    assert plan(16, 16, T=2, plain=False).mode == "tiles"
    for args in ((16, 17), (32, 8), (16, 16, 128)):  # 32 blocks, 32 offsets, head dims above 64
        assert plan(*args).mode == "fused", args
    assert plan(16, 16, sm=None).mode == "tiles" and plan(16, 16, sm=None, mode="onchip").mode == "onchip"
    assert plan(16, 16, ieee=True).mode == "fused" and plan(16, 16, ieee=True, mode="onchip").mode == "onchip"
    assert plan(16, 16, mode="fused").mode == "fused" and plan(16, 16, mode="tiles").mode == "tiles"
    assert plan(22, 22, mode="onchip").mode == "fused"  # where it does not apply: the default
    warps = (plan(16, 16).fused_warps, plan(16, 16, 32).fused_warps, plan(16, 16, bh=96).fused_warps,
             plan(16, 16, bh=132).fused_warps, plan(16, 16, bh=133).fused_warps, plan(16, 16, warps=8).fused_warps)
    assert warps == (4, 4, 16, 16, 4, 8)
    with pytest.raises(ValueError, match="mode must be one of"):
        Knobs(mode="on-chip")


def _layout_case(kind: str, B: int, N: int) -> tuple[torch.Tensor, ...]:
    """A key-padding mask of ``kind`` whose row 1 is contiguous in the middle, and the token index,
    lengths and offsets to be written, filled with -5."""
    mask = key_padding_mask(kind, B, N, torch.Generator().manual_seed(7))
    mask[1] = False
    mask[1, 3:9] = True  # contiguous, in the middle
    tok = torch.full((B, N), -5, dtype=torch.int64)
    lens, offs = torch.full((2, B), -5, dtype=torch.int64)
    return mask, tok, lens, offs


def _check_layout(mask, tok, lens, offs, b, pre, ranks):
    """Each sequence's length and pre-padding offset; where its real tokens are contiguous, their
    start + 1 in the offset's high 32 bits and no token index written; where scattered, high bits 0
    and the token index of the ranks ``ranks(L, off)`` gives (a range), nothing else written."""
    for i in range(mask.shape[0]):
        pos = mask[i].nonzero().flatten()
        L = len(pos)
        off = -(-L // b) * b - L if pre else 0
        assert [lens[i].item(), offs[i].item() & 0xFFFFFFFF] == [L, off]
        contiguous = L == 0 or pos[-1].item() - pos[0].item() + 1 == L
        start = (pos[0].item() if L else 0) if contiguous else -1
        assert offs[i].item() >> 32 == start + 1, (i, start)
        lo, hi = ranks(L, off)
        if contiguous:
            assert (tok[i] == -5).all()
        else:
            assert torch.equal(tok[i, lo:hi], pos[lo:hi])
            assert (tok[i, :lo] == -5).all() and (tok[i, max(hi, lo):] == -5).all()


@pytest.mark.parametrize("kind", ["right", "left", "random", "empty_row"])
def test_layout_kernel(kern, kind):
    """Length, pre-padding offset, contiguous start or token index of each sequence, over several
    chunks of the mask: contiguous rows (right, left, in the middle, empty) and scattered ones."""
    B, N, b = 4, 45, 6
    mask, tok, lens, offs = _layout_case(kind, B, N)
    kern._layout_kernel[(B,)](mask.view(torch.uint8), tok, lens, offs, *mask.stride(), N, b, PRE=True, CH=16)
    _check_layout(mask, tok, lens, offs, b, True, lambda L, off: (0, L))


@triton.jit
def _layout_probe(mask_ptr, stride_mb, stride_mn, len_ptr, off_ptr, tok_ptr, N, b, slot_lo, slot_hi,
                  PRE: tl.constexpr, CH: tl.constexpr):
    """The first grid's layout prologue alone: one program per sequence."""
    layout_kernel._sequence_layout(mask_ptr, stride_mb, stride_mn, (len_ptr, off_ptr, tok_ptr),
                                   tl.program_id(0), N, b, slot_lo, slot_hi, PRE, CH)


@pytest.mark.parametrize("kind", ["right", "left", "random", "empty_row"])
@pytest.mark.parametrize("pre", [False, True])
@pytest.mark.parametrize("slots", [(0, 48), (12, 30)])
def test_layout_prologue(kern, kind, pre, slots):
    """As ``test_layout_kernel``, for the token index of the ranks that a program's slots hold."""
    B, N, b = 4, 45, 6
    mask, tok, lens, offs = _layout_case(kind, B, N)
    _layout_probe[(B,)](mask.view(torch.uint8), *mask.stride(), lens, offs, tok, N, b, *slots, PRE=pre, CH=16)
    _check_layout(mask, tok, lens, offs, b, pre,
                  lambda L, off: (max(slots[0] - off, 0), min(slots[1] - off, L)))


@pytest.mark.parametrize("in_grid", [True, False])
@pytest.mark.parametrize("case", [(2, 3, 50, 6, 1, "pre", "random"), (3, 5, 45, 7, 2, "post", "right"),
                                  (2, 4, 30, 4, 2, "pre", None)])
def test_heads_in_chunks(kern, case, in_grid):
    """Large intermediates: the heads run in chunks that reuse one scratch (here forced with
    ``chunk_bytes=0``: chunks of one or two heads); the output is the same. The mask's layout comes
    from the first grid or from a launch of its own."""
    B, H, N, b, T, pad, mask_kind = case
    gen = torch.Generator().manual_seed(11)
    q, k, v = _inputs(B, H, N, 16, 16, torch.float32, "bnhd", gen)
    mask = key_padding_mask(mask_kind, B, N, gen)
    out = _run(kern, q, k, v, mask, b, T, pad, {"chunk_bytes": 0, "layout_in_grid": in_grid})
    assert _rel(out, _reference(q, k, v, mask, b, T, pad)) < TOL[torch.float32]
    assert torch.equal(out, _run(kern, q, k, v, mask, b, T, pad))


@pytest.mark.parametrize("pad", ["post", "pre"])
@pytest.mark.parametrize("T,variant", [(1, (False, 0)), (2, (False, 0)), (2, (True, 3))], ids=["1", "2", "2-diag-G3"])
def test_batch_invariance(kern, pad, T, variant):
    """A 19-token sequence gives the same outputs alone and inside batches padded left or right,
    with the op's options too (its global keys are chosen from its own tokens)."""
    gen = torch.Generator().manual_seed(7 + T)
    L, N, b = 19, 32, 5
    q, k, v = _inputs(1, 2, L, 16, 16, torch.float32, gen=gen)
    alone = _run(kern, q, k, v, None, b, T, pad, variant=variant)
    for where in ("right", "left", "middle"):
        Q, K, V = (torch.randn(3, 2, N, 16, generator=gen) for _ in range(3))
        mask = torch.rand(3, N, generator=gen) > 0.5
        pos = {"right": torch.arange(L), "left": torch.arange(N - L, N),
               "middle": torch.sort(torch.randperm(N, generator=gen)[:L]).values}[where]
        mask[1] = False
        mask[1, pos] = True
        Q[1][:, pos], K[1][:, pos], V[1][:, pos] = q[0], k[0], v[0]
        for mode in ("tiles", "fused", "onchip"):  # (on-chip: its own layout of the mask, contiguous or not)
            out = _run(kern, Q, K, V, mask, b, T, pad, mode=mode, variant=variant)
            assert torch.isfinite(out).all()
            torch.testing.assert_close(out[1][:, pos], alone[0], rtol=1e-5, atol=1e-6)


def test_public_api_dispatch_and_layout(kern):
    gen = torch.Generator().manual_seed(3)
    q, k, v = _inputs(2, 3, 26, 32, 32, torch.float16, "bnhd", gen)
    mask = key_padding_mask("random", 2, 26, gen)
    out = ops.monarch_attention(q, k, v, mask, block_size=5, num_steps=2, pad_type="pre", backend="triton")
    ref = ops.monarch_attention(q, k, v, mask, block_size=5, num_steps=2, pad_type="pre", backend="torch")
    assert _rel(out, ref.float()) < TOL[torch.float16]
    # The output is laid out like q: its transpose back to (B, N, H, d) needs no copy.
    assert out.transpose(1, 2).is_contiguous()
    # "auto" on CPU tensors is the reference.
    auto = ops.monarch_attention(q, k, v, mask, block_size=5, num_steps=2, pad_type="pre")
    torch.testing.assert_close(auto, ref)


def test_custom_op_opcheck(kern):
    gen = torch.Generator().manual_seed(4)
    q, k, v = _inputs(1, 2, 12, 16, 16, torch.float32, gen=gen)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, -3:] = False
    from monarch_convert.kernels.triton_op import monarch_attention_fwd

    for options in ((), (True, 3)):
        torch.library.opcheck(monarch_attention_fwd, (q, k, v, mask, 4, 2, "post", 0.25, *options),
                              test_utils=("test_schema", "test_faketensor"))


def test_compiles_without_graph_breaks(kern):
    gen = torch.Generator().manual_seed(5)
    q, k, v = _inputs(1, 2, 20, 16, 16, torch.float32, "bnhd", gen)

    def f(q, k, v):
        return ops.monarch_attention(q * 1.0, k, v, block_size=4, num_steps=1, backend="triton") + 1.0

    def g(q, k, v):  # the options are constants of the graph
        return ops.monarch_attention(q * 1.0, k, v, block_size=4, num_steps=2, backend="triton",
                                     exact_diagonal=True, global_keys=3) + 1.0

    torch._dynamo.reset()
    for fn in (f, g):
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(q, k, v), fn(q, k, v))


def test_triton_backend_on_cpu_needs_interpreter(kern, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="CUDA"):
        ops.monarch_attention(q, q, q, block_size=2, backend="triton")


@pytest.mark.parametrize("pad", ["post", "pre"])
@pytest.mark.parametrize("T", [1, 2])
def test_mask_of_ones_is_no_mask(kern, pad, T):
    """Converted models pass no mask when nothing is padded (patches/dispatch.py): the same outputs."""
    gen = torch.Generator().manual_seed(11 + T)
    q, k, v = _inputs(2, 2, 37, 16, 16, torch.float32, "bnhd", gen)
    ones = torch.ones(2, 37, dtype=torch.bool)
    for backend in ("torch", "triton"):
        with_ones = ops.monarch_attention(q, k, v, ones, block_size=5, num_steps=T, pad_type=pad, backend=backend)
        without = ops.monarch_attention(q, k, v, None, block_size=5, num_steps=T, pad_type=pad, backend=backend)
        assert torch.equal(with_ones, without), backend


def _extreme_run(kern, mode):
    def run(q, k, v, mask, b, steps, pad, scale, knobs):
        return _run(kern, q, k, v, mask, b, steps, pad, knobs, mode, scale=scale)

    return run


@pytest.mark.parametrize("mode", ["tiles", "fused", "onchip"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", EXTREME)
def test_extreme_logits_stay_in_the_convex_hull_of_v(kern, kind, dtype, mode):
    """Float32 statistics and max-subtracted exponentials keep every output a convex combination of
    v. ``scale_above_one``: aL = s * R @ k (keys of 3e4, s = 4) overflowed float16 where the R-step
    stored it, and the outputs were NaN; it is stored as min(s, 1) * R @ k."""
    check_extreme_hull(_extreme_run(kern, mode), kind, dtype, ((23, 5, {}),), heads=1)


@pytest.mark.parametrize("kind,mode", [("constant", "tiles"), ("random_large", "fused"), ("scale_above_one", "tiles")])
def test_extreme_logits_with_the_options(kern, kind, mode):
    """The options' exact columns (log-sum-exps and merged values) keep outputs in the hull of v."""
    def run(q, k, v, mask, b, steps, pad, scale, variant):
        return _run(kern, q, k, v, mask, b, steps, pad, None, mode, scale=scale, variant=variant)

    check_extreme_hull(run, kind, torch.float16, ((23, 5, (True, 3)), (24, 4, (False, 30))), heads=1)


@pytest.mark.parametrize("kind", ["constant", "scale_above_one"])
def test_extreme_logits_in_looped_tiles(kern, kind):
    """The same where the R-step loops over key tiles (b = 20 > 16), and where the L-steps loop over
    block tiles (m = 18 > 16) with their statistics recomputed per column tile."""
    cases = ((45, 20, {"max_tile": 16}), (52, 3, {"max_tile": 16}))
    check_extreme_hull(_extreme_run(kern, "tiles"), kind, torch.float16, cases, heads=1)


@pytest.mark.parametrize("mode", ["tiles", "onchip"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tied_extreme_logits_attend_uniformly(kern, dtype, mode):
    check_tied_logits_average_v(lambda q, k, v, steps: _run(kern, q, k, v, None, 4, steps, "post", mode=mode), dtype)


@pytest.mark.parametrize("mode", ["tiles", "fused", "onchip"])
def test_block_beyond_the_sequence_runs_as_one_block(kern, mode):
    """b >= N is one block of N slots (before, b = 2**31 on 10 tokens allocated 2**31 slots per head):
    the same launches, bit for bit, as b = N."""
    gen = torch.Generator().manual_seed(8)
    q, k, v = _inputs(2, 2, 10, 16, 16, torch.float32, gen=gen)
    mask = key_padding_mask("right", 2, 10, gen)
    for m in (None, mask):
        for pad in ("post", "pre"):
            at_n = _run(kern, q, k, v, m, 10, 2, pad, mode=mode)
            for b in (11, 2**63 - 1):
                assert torch.equal(_run(kern, q, k, v, m, b, 2, pad, mode=mode), at_n), (b, pad)
    assert kern.plan_for(q, v, 2**63 - 1, 1).r_step == kern.plan_for(q, v, 10, 1).r_step


def test_empty_inputs_give_an_empty_output_as_sdpa(kern):
    for shape in ((2, 3, 0, 8), (0, 3, 5, 8), (2, 0, 5, 8)):
        q = torch.randn(shape)
        for mask in (None, torch.ones(shape[0], shape[2], dtype=torch.bool)):
            out = ops.monarch_attention(q, q, q, mask, block_size=4, num_steps=2, backend="triton")
            assert out.shape == shape


def test_more_global_keys_than_the_kernels_hold_are_refused(kern):
    q = torch.zeros(1, 1, 200, 16)
    with pytest.raises(ValueError, match="at most 128 global keys"):
        kern.monarch_attention_triton(q, q, q, None, 8, 1, "post", 0.25, global_keys=129)
    out = kern.monarch_attention_triton(q[:, :, :20], q[:, :, :20], q[:, :, :20], None, 8, 1, "post", 0.25,
                                        global_keys=10**9)  # only N = 20 can be global
    assert torch.isfinite(out).all()


def test_sequences_beyond_int32_indexing_are_refused(kern):
    """Slots and tile counts are int32 in the kernels, and stay below 2N with b capped at N."""
    q = torch.zeros(1, 1, 1, 16).expand(1, 1, kern.MAX_SEQ_LEN + 1, 16)  # no memory: stride 0
    with pytest.raises(ValueError, match="at most"):
        kern.monarch_attention_triton(q, q, q, None, 2**40, 1, "post", 0.25)


def test_set_chunk_bytes_drops_the_replays_recorded_before(kern, monkeypatch):
    monkeypatch.setattr(kern.plan_module, "CHUNK_BYTES", kern.plan_module.CHUNK_BYTES)
    monkeypatch.setitem(kern.REPLAYS, "recorded before", None)
    assert kern.plan_module.heads_per_chunk(12, 50 << 20, 100 << 20) == 12  # the default: all heads
    kern.set_chunk_bytes(32 << 20)
    assert "recorded before" not in kern.REPLAYS
    # Chunks whose intermediates fit a fifth of q, k, v and the output: 3 chunks of 4 heads.
    assert kern.plan_module.heads_per_chunk(12, 50 << 20, 100 << 20) == 4


def test_entry_point_key_only_where_a_replay_may_apply(kern):
    ops._launcher()  # the launcher's module is loaded: keys from here on
    q = torch.randn(1, 2, 8, 4)
    args = (None, 4, 1, "post", None, "triton", False, 0)
    key, out = ops._replayed(q, q, q, *args)
    assert key is not None and out is None  # nothing recorded on the CPU
    assert ops._replayed(q, q, "k", *args) == (None, None)
    assert ops._replayed(q.requires_grad_(), q, q, *args) == (key, None)  # the key alone: no replay run
    with torch.no_grad():
        assert ops._replayed(q, q, q, *args)[0] == key
    shifted = torch.randn(q.numel() + 1)[1:].view(q.shape)
    assert ops._replayed(shifted, q, q, *args) == (None, None)


def test_register_cap_goes_to_the_tiled_steps_only(kern, monkeypatch):
    """``Knobs(maxnreg=...)`` (Triton's cap on registers per thread) is a launch option of the tiled
    steps' grids (R-steps, L-steps), not of the mask's layout launch; ``maxnreg=0``: none anywhere.
    The outputs stay the same."""
    launched = []
    real = kern._Call.launch

    def spy(self, kernel, grid, *args, **kwargs):
        launched.append((kernel.fn.__name__, kwargs.get("maxnreg")))
        return real(self, kernel, grid, *args, **kwargs)

    monkeypatch.setattr(kern._Call, "launch", spy)
    gen = torch.Generator().manual_seed(5)
    q, k, v = _inputs(2, 2, 40, 16, 16, torch.float32, gen=gen)
    mask = key_padding_mask("right", 2, 40, gen)
    outs = []
    for cap in (128, 0):
        launched.clear()
        outs.append(kern.monarch_attention_triton(q, k, v, mask, 6, 2, "post", 0.25,
                                                  knobs=Knobs(mode="tiles", maxnreg=cap, layout_in_grid=False)))
        assert dict(launched) == {"_layout_kernel": None, "_r_step_kernel": cap or None,
                                  "_l_sum_kernel": cap or None, "_l_out_kernel": cap or None}
    assert torch.equal(*outs)


def _tiled_plan(kern, N: int, width: int = 64, T: int = 1, ieee: bool = False, **knobs):
    """The tiled plan of a 12-head inference call at N, b = ceil(sqrt N), on a GPU of 132 SMs."""
    b = math.isqrt(N - 1) + 1
    return kern.plan_module.make_plan(12, b, -(-N // b), width, T, 132, True, Knobs(mode="tiles", **knobs),
                                      plain=True, ieee=ieee)


def test_register_cap_by_default_on_grouped_64_row_tiles_of_4_warps_only(kern):
    """``plan._register_cap``: 128 registers where they were measured to pay (grouped 64-row tiles of
    4 warps, head dims up to 64, half precision), on every step of such a plan; none elsewhere."""
    def caps(N, **kw):
        p = _tiled_plan(kern, N, **kw)
        return p.r_step.maxnreg, p.l_step.maxnreg, p.s_step.maxnreg

    assert caps(4096) == caps(2048) == caps(4096, T=2) == (128, 128, 128)
    for uncapped in (caps(16384), caps(8192), caps(1024), caps(512), caps(4096, width=128), caps(4096, ieee=True),
                     caps(4096, maxnreg=0)):
        assert uncapped == (None, None, None)
    assert caps(16384, maxnreg=96) == (96, 96, 96)


def test_al_in_output_by_default_on_32_row_tiles_only(kern):
    """``make_plan``: aL in the output by default where the R-step's tiles and the L-step's grouped
    ones have at most ``AL_HOME_ROWS`` (32) rows (N <= 1024 at b = ceil(sqrt N), head dims up to
    64); not with 64-row ones (N 1025-4096: +6% to +20% measured) nor where an offset spans several tiles; on
    request wherever an L-step program can own whole offsets; never with ``al_home=False``."""
    def home(N, **kw):
        return _tiled_plan(kern, N, **kw).al_home

    assert kern.plan_module.AL_HOME_ROWS == 32
    assert [home(N) for N in (512, 1024, 1025, 2048, 4096, 16384)] == [True, True, False, False, False, False]
    assert not home(1024, width=128)  # 64-row groups there
    assert all(home(N, al_home=True) for N in (2048, 4096, 16384)) and not home(1024, al_home=False)
