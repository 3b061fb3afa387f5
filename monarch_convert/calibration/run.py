""":func:`calibrate`: convert a model with per-layer settings chosen on a little unlabelled data,
under a FLOPs budget or a fidelity floor, and fold in the output correction that helps most.

The stages: the data are cut into a fitted and a held-out part (``inputs.py``); the softmax
model's outputs on the held-out part are kept as the reference; every candidate setting of every
layer is measured on the fitted part (``passes.candidate_stats``) and the search proposes
allocations (``search.py``); each proposal is validated end to end: converted, its corrections
fitted layer by layer on the fitted part, and measured on the held-out part uncorrected and with
each correction. The best validated proposal is applied; a correction that does not raise the
held-out fidelity is not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import MonarchConfig
from ..errors import MonarchConvertError
from ..patches.base import layer_index
from .correction import Calibration, HeadStats, fit_correction
from .folding import has_output_bias
from .inputs import CalibrationData, check_readable, load_processor, prepare
from .passes import candidate_stats, features, fit_calibration, measure, run_batches
from .report import CalibrationReport, LayerRow
from .search import Allocation, Candidate, Option, best_under, default_candidates, frontier, total_flops

CORRECTIONS = ("auto", "none", "scalar", "channel", "head")
# Examples of the fitted part the per-layer errors of every candidate are measured on (the search's
# most expensive pass: every candidate of every layer runs on them).
SEARCH_EXAMPLES = 32


@dataclass
class _Context:
    """What the stages share."""

    model: Any
    data: CalibrationData
    modules: dict[str, torch.nn.Module]  # converted-able attention modules, in forward order
    shapes: dict[str, tuple[int, int]]  # module -> (heads, head_dim)
    base: MonarchConfig  # pad_type and backend kept from the model's own settings
    seq_len: int
    reference: list = field(default_factory=list)  # the softmax model's held-out features
    progress: bool = True
    alpha: float | None = None  # None: each kind's own (correction.RIDGE)


@dataclass
class _Result:
    """One allocation validated end to end."""

    allocation: Allocation
    settings: MonarchConfig
    fidelity: dict[str, float]  # correction kind -> mean held-out similarity
    worst: dict[str, float]
    stats: dict[str, dict[str, HeadStats]]  # kind -> module -> held-out statistics
    calibrations: dict[str, Calibration]
    kind: str = "none"

    @property
    def best(self) -> float:
        return self.fidelity[self.kind]


def calibrate(model: Any, data: Any, tokenizer: Any = None, *, max_flops: float | None = None,
              min_fidelity: float | None = None, seq_len: int | None = None, samples: int = 128,
              correction: str = "auto", batch_size: int = 8, validate: int = 3, progress: bool = True,
              seed: int = 0, allow_softmax: bool = True) -> CalibrationReport:
    """Convert ``model`` in place with per-layer settings chosen on ``data``, and apply the fitted
    correction; returns the :class:`CalibrationReport`.

    data: texts or images (a list), a ``datasets.Dataset``, or a local file / Hub id the
        evaluator reads; ``samples`` of them (seeded by ``seed``), 3/4 fitted, 1/4 held out.
    tokenizer: tokenizer or image processor; default the model's own (``config.name_or_path``).
    max_flops: the most attention FLOPs allowed, as a fraction of softmax's at ``seq_len``
        (default the model's maximum length; layers left on softmax count 100%): the held-out
        fidelity is maximised under it. min_fidelity: instead, the fewest FLOPs whose held-out
        fidelity reaches it. Fidelity: mean cosine of the mean-pooled last hidden states to the
        softmax model's, or for a classifier the overlap of the class probabilities.
    correction: ``"auto"`` (of none, the scalar gain and the per-head map, the one with the best
        held-out fidelity), ``"none"``, ``"scalar"``, ``"channel"`` or ``"head"``; a correction that
        does not raise the held-out fidelity is not applied.
    validate: how many proposals of the search are validated end to end (max_flops).
    allow_softmax: whether the search may leave layers on softmax (False: every layer converted).
    """
    started = time.perf_counter()
    _check(max_flops, min_fidelity, correction)
    ctx = _set_up(model, data, tokenizer, seq_len, samples, batch_size, seed, progress)
    softmax_total = sum(Candidate().flops(ctx.seq_len, d, h) for h, d in ctx.shapes.values())
    _check_budget(ctx, max_flops, softmax_total)
    options = _layer_options(ctx, correction, allow_softmax)
    if max_flops is not None:
        proposals = best_under(options, max_flops * softmax_total, validate)
        results = [_validate(ctx, options, a, correction) for a in proposals]
        chosen, met = max(results, key=lambda r: r.best), True
    else:
        chosen, met, results = _cheapest_reaching(ctx, options, min_fidelity, correction)
    _apply(ctx, chosen)
    target = {"max_flops": max_flops} if max_flops is not None else {"min_fidelity": min_fidelity}
    return _report(ctx, options, chosen, results, target, met, softmax_total, time.perf_counter() - started)


def _check(max_flops: float | None, min_fidelity: float | None, correction: str) -> None:
    if (max_flops is None) == (min_fidelity is None):
        raise MonarchConvertError("calibrate needs exactly one of max_flops and min_fidelity")
    if max_flops is not None and not (isinstance(max_flops, (int, float)) and 0 < max_flops <= 1):
        raise MonarchConvertError(f"max_flops must be a fraction in (0, 1], got {max_flops!r}")
    if min_fidelity is not None and not (isinstance(min_fidelity, (int, float)) and 0 < min_fidelity <= 1):
        raise MonarchConvertError(f"min_fidelity must be in (0, 1], got {min_fidelity!r}")
    if correction not in CORRECTIONS:
        raise MonarchConvertError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")


def _check_budget(ctx: _Context, max_flops: float | None, softmax_total: int) -> None:
    """Refuse, before the search, a budget below every candidate's cost (the model is reverted)."""
    from ..conversion import revert

    if max_flops is None:
        return
    candidates = default_candidates(ctx.seq_len)
    cheapest = [min(c.flops(ctx.seq_len, d, h) for c in candidates) for h, d in ctx.shapes.values()]
    if sum(cheapest) > max_flops * softmax_total:
        revert(ctx.model)
        raise MonarchConvertError(f"max_flops={max_flops:g} is below the cheapest settings searched "
                                  f"({sum(cheapest) / softmax_total:.3f} of softmax's attention FLOPs at "
                                  f"seq_len={ctx.seq_len})")


def _set_up(model, data, tokenizer, seq_len, samples, batch_size, seed, progress) -> _Context:
    """The data, the softmax reference, and the model converted in every layer it can be."""
    from ..conversion import conversion_report, convert, is_converted, revert, stored_settings
    from ..conversion_plan import architecture_patch

    patch = architecture_patch(model)
    check_readable(patch)
    seq_len = seq_len or patch.max_length(model.config)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise MonarchConvertError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    own = conversion_report(model).settings if is_converted(model) else stored_settings(model)
    base = MonarchConfig(pad_type=own.pad_type, backend=own.backend) if own is not None else MonarchConfig()
    prepared = prepare(model, data, load_processor(model, tokenizer), samples, seq_len, batch_size, seed)
    revert(model)
    model.eval()
    reference = run_batches(model, prepared.held_out, "calibration: softmax reference", progress,
                            lambda x: features(model, x))
    convert(model, base.merged(None, layers="all", layer_settings={}))
    report = conversion_report(model)
    modules = {r.name: model.get_submodule(r.name) for r in report.converted}
    layers = [layer_index(name) for name in modules]
    if None in layers or len(set(layers)) != len(layers):
        raise MonarchConvertError(f"calibrate needs one converted attention module per layer, found {list(modules)}")
    shapes = {r.name: (r.num_heads, r.head_dim) for r in report.converted}
    return _Context(model, prepared, modules, shapes, base.merged(report.settings), seq_len, reference, progress)


def _layer_options(ctx: _Context, correction: str, allow_softmax: bool) -> list[list[Option]]:
    """Per module, each candidate with its estimated error (held out within the fitted part) and FLOPs."""
    candidates = [c for c in default_candidates(ctx.seq_len) if not c.is_softmax]
    s = ctx.base
    specs = {name: [c.spec(s.pad_type, s.backend, name) for c in candidates] for name in ctx.modules}
    stats = candidate_stats(ctx.model, ctx.modules, specs, _first_examples(ctx.data.fit, SEARCH_EXAMPLES), ctx.progress)
    kind = "head" if correction == "auto" else correction  # auto: the search assumes the strongest kind
    options = []
    for name in ctx.modules:
        heads, dim = ctx.shapes[name]
        bias = has_output_bias(ctx.model, name)
        layer = [Option(c, _estimated_error(a, b, kind, ctx.alpha, bias), c.flops(ctx.seq_len, dim, heads))
                 for c, (a, b) in zip(candidates, stats[name])]
        softmax = [Option(Candidate(), 0.0, Candidate().flops(ctx.seq_len, dim, heads))] if allow_softmax else []
        options.append(layer + softmax)
    return options


def _first_examples(batches: list[dict], count: int) -> list[dict]:
    """The first batches holding about ``count`` examples (at least one batch)."""
    out, seen = [], 0
    for batch in batches:
        if out and seen >= count:
            break
        out.append(batch)
        seen += len(next(iter(batch.values())))
    return out


def _estimated_error(a: HeadStats, b: HeadStats, kind: str, alpha: float | None, bias: bool = True) -> float:
    """Squared relative error of the (corrected) output, each half's correction measured on the other."""
    ref = float(a.sss.sum() if a.sss is not None else 0) + float(b.sss.sum() if b.sss is not None else 0)
    if ref <= 0:
        return 0.0
    if kind == "none" or a.n < 2 or b.n < 2:
        return (a.squared_error() + b.squared_error()) / ref
    return (b.squared_error(*fit_correction(a, kind, alpha, bias))
            + a.squared_error(*fit_correction(b, kind, alpha, bias))) / ref


def _settings(ctx: _Context, options: list[list[Option]], allocation: Allocation) -> MonarchConfig:
    """The conversion settings of ``allocation``: its converted layers, each with its own setting."""
    own = {layer_index(name): options[i][j].candidate for i, (name, j) in enumerate(zip(ctx.modules, allocation))}
    converted = {layer: c.setting() for layer, c in own.items() if not c.is_softmax}
    return MonarchConfig(pad_type=ctx.base.pad_type, backend=ctx.base.backend, layers=tuple(converted),
                         layer_settings=converted)


def _validate(ctx: _Context, options: list[list[Option]], allocation: Allocation, correction: str) -> _Result:
    """``allocation`` converted and measured on the held-out part, uncorrected and with each
    correction kind ``correction`` allows (fitted layer by layer on the fitted part)."""
    from ..conversion import apply_calibration, convert, revert

    settings = _settings(ctx, options, allocation)
    kinds = {"auto": ("scalar", "head"), "none": ()}.get(correction, (correction,))
    result = _Result(allocation, settings, {}, {}, {}, {})
    for kind in ("none", *kinds):
        revert(ctx.model)  # no correction folded in: each kind is fitted from the uncorrected model
        convert(ctx.model, settings)
        modules = {n: m for n, m in ctx.modules.items() if layer_index(n) in settings.layers}
        if kind != "none":
            result.calibrations[kind] = fit_calibration(
                ctx.model, modules, ctx.data.fit, kind, ctx.alpha, ctx.progress,
                lambda cal: apply_calibration(ctx.model, cal))
        sims, result.stats[kind] = measure(ctx.model, modules, ctx.data.held_out, ctx.reference,
                                           f"calibration: held-out fidelity ({kind})", ctx.progress)
        result.fidelity[kind], result.worst[kind] = float(sims.mean()), float(sims.min())
    result.kind = choose_correction(result.fidelity)
    return result


def choose_correction(fidelity: dict[str, float]) -> str:
    """The correction kind to apply, from held-out fidelity by kind: the best, and none unless a
    correction raises it. (The per-head map once needed a margin over the scalar because it lost
    out of domain; its stronger ridge, ``correction.RIDGE``, removed that loss.)"""
    return max(fidelity, key=lambda k: (fidelity[k], k == "none"))


def _cheapest_reaching(ctx: _Context, options: list[list[Option]], floor: float,
                       correction: str) -> tuple[_Result, bool, list[_Result]]:
    """The cheapest allocation of the search's frontier whose held-out fidelity reaches ``floor``
    (bisection: fidelity grows along the frontier), else the most faithful one measured."""
    points = frontier(options)
    results: list[_Result] = []
    lo, hi, found = 0, len(points) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        results.append(_validate(ctx, options, points[mid], correction))
        if results[-1].best >= floor:
            found, hi = results[-1], mid - 1
        else:
            lo = mid + 1
    if found is not None:
        return found, True, results
    return max(results, key=lambda r: r.best), False, results


def _apply(ctx: _Context, chosen: _Result) -> None:
    from ..conversion import apply_calibration, convert, revert

    revert(ctx.model)
    convert(ctx.model, chosen.settings)
    if chosen.kind != "none":
        apply_calibration(ctx.model, chosen.calibrations[chosen.kind])


def _report(ctx: _Context, options: list[list[Option]], chosen: _Result, results: list[_Result], target: dict,
            met: bool, softmax_total: float, seconds: float) -> CalibrationReport:
    calibration = chosen.calibrations.get(chosen.kind)
    rows = []
    for i, (name, j) in enumerate(zip(ctx.modules, chosen.allocation)):
        option, stats = options[i][j], chosen.stats[chosen.kind].get(name)
        corrected = calibration is not None and name in calibration.weights
        fitted = (calibration.weights[name], calibration.biases[name]) if corrected else (None, None)
        heads, dim = ctx.shapes[name]
        before = None if stats is None else stats.relative_error()
        after = None if stats is None else stats.relative_error(*fitted)
        rows.append(LayerRow(layer_index(name), name, option.candidate.label(), option.flops,
                             Candidate().flops(ctx.seq_len, dim, heads), before, after))
    metric = "class-probability overlap" if ctx.reference and ctx.reference[0][0] == "probabilities" \
        else "embedding cosine"
    validated = tuple({"settings": [options[i][j].candidate.label() for i, j in enumerate(r.allocation)],
                       "flops_ratio": total_flops(options, r.allocation) / softmax_total,
                       "fidelity": r.fidelity, "chosen_correction": r.kind} for r in results)
    return CalibrationReport(
        target=target, target_met=met, metric=metric, seq_len=ctx.seq_len, correction=chosen.kind,
        fidelity_before=chosen.fidelity["none"], fidelity_after=chosen.best, fidelity_min=chosen.worst[chosen.kind],
        flops_ratio=total_flops(options, chosen.allocation) / softmax_total, layers=tuple(rows),
        fit_examples=ctx.data.fit_examples, held_out_examples=ctx.data.held_out_examples, time_s=seconds,
        validated=validated,
    )
