""":class:`CalibrationReport`: what ``calibrate`` chose and measured (saved in ``conversion.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..flops import format_flops


@dataclass(frozen=True)
class LayerRow:
    """One converted-or-not layer: its setting, FLOPs, and held-out relative error of its attention
    output against softmax on the same hidden states, before and after the correction."""

    layer: int
    module: str
    setting: str  # "softmax" or "b=16 T=2 diag G=8"
    flops: int
    softmax_flops: int
    error_before: float | None  # None: left on softmax
    error_after: float | None


@dataclass(frozen=True)
class CalibrationReport:
    """``fidelity_*``: mean over the held-out examples of the similarity of the calibrated model's
    output to the softmax model's (``metric``: embedding cosine, or class-probability overlap).
    ``flops_ratio``: attention FLOPs at ``seq_len`` against softmax's, unconverted layers at 100%.
    ``validated``: every allocation measured end to end, with its held-out fidelity per correction."""

    target: dict[str, float]  # {"max_flops": 0.25} or {"min_fidelity": 0.97}
    target_met: bool
    metric: str
    seq_len: int
    correction: str  # the kind applied: none, scalar or head
    fidelity_before: float  # the chosen settings, uncorrected
    fidelity_after: float  # the chosen settings, with the correction applied (= before for none)
    fidelity_min: float  # the worst held-out example, as applied
    flops_ratio: float
    layers: tuple[LayerRow, ...]
    fit_examples: int
    held_out_examples: int
    time_s: float
    validated: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = [asdict(r) for r in self.layers]
        out["validated"] = list(self.validated)
        return out

    def format_table(self) -> str:
        target = ", ".join(f"{k}={v:g}" for k, v in self.target.items())
        lines = [
            f"Calibration ({target}{'' if self.target_met else ': NOT met'}) at seq_len={self.seq_len}: "
            f"{self.fit_examples} examples fitted, {self.held_out_examples} held out, {self.time_s:.0f}s",
            f"held-out {self.metric}: {self.fidelity_before:.4f} uncorrected -> {self.fidelity_after:.4f} with "
            f"correction '{self.correction}' (worst example {self.fidelity_min:.4f}); "
            f"attention FLOPs {100 * self.flops_ratio:.1f}% of softmax",
            f"  {'layer':>5}  {'setting':<18}  {'FLOPs':>11}  {'% softmax':>9}  {'error before':>12}  {'after':>6}",
        ]
        for r in self.layers:
            before = "-" if r.error_before is None else f"{r.error_before:.3f}"
            after = "-" if r.error_after is None else f"{r.error_after:.3f}"
            lines.append(f"  {r.layer:>5}  {r.setting:<18}  {format_flops(r.flops):>11}  "
                         f"{100 * r.flops / r.softmax_flops:>8.1f}%  {before:>12}  {after:>6}")
        return "\n".join(lines)
