"""The per-head output correction: ``z_h -> z_h W_h + c_h`` for each head h of a converted
attention module, where ``z_h`` is the head's MonarchAttention output (a row of dv values), fitted
so that it comes close to the softmax output ``s_h`` on the same hidden states.

Kinds: ``"scalar"`` (``W_h = g_h I``: one gain per head, and a bias per feature), ``"channel"``
(``W_h = diag(g_h)``: a gain per head and feature, and a bias) and ``"head"`` (a dv x dv map per
head, and a bias). Both are ridge least squares shrunk toward the *identity*
(no correction), not toward zero: where the Monarch output barely varies, shrinking toward zero
makes the map ill-conditioned and throws away the output (docs/algorithm.md, calibration). With
centred statistics ``C_zz``, ``C_zs`` over the fitted tokens and ``lam = alpha * tr(C_zz) / dv``::

    head:   W = (C_zz + lam I)^-1 (C_zs + lam I)            c = mean(s) - mean(z) W
    scalar: g = (tr C_zs + dv lam) / (tr C_zz + dv lam)     c = mean(s) - g mean(z)
    channel: g_j = (C_zs[j, j] + lam) / (C_zz[j, j] + lam)  c = mean(s) - g * mean(z)

Everything is computed from sums (:class:`HeadStats`), so the error of any correction on any
tokens follows from their sums too, without a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MonarchConvertError

KINDS = ("none", "scalar", "channel", "head")
CALIBRATION_FILE = "monarch_calibration.safetensors"
_FORMAT = "monarch_calibration/1"
# Ridge strength alpha by kind. The per-head map at alpha = 0.3 beat the scalar gain on held-out
# prose yet lost out of domain (MiniLM, 128 passages: 0.9564 against 0.9567 uncorrected at 15% of
# softmax's FLOPs); at alpha = 1 it kept 0.002 of its in-domain gain over the scalar and lost
# nothing out of domain (0.9598; docs/results.md, section 4). The one-gain kinds need less shrinking.
RIDGE = {"scalar": 0.3, "channel": 0.3, "head": 1.0}


@dataclass
class HeadStats:
    """Sums over tokens, per head, of the Monarch output z and the softmax output s (float64)."""

    n: float = 0.0
    sz: torch.Tensor | None = None  # (H, d)
    ss: torch.Tensor | None = None  # (H, d)
    szz: torch.Tensor | None = None  # (H, d, d)
    szs: torch.Tensor | None = None  # (H, d, d)
    sss: torch.Tensor | None = None  # (H,)

    def add(self, z: torch.Tensor, s: torch.Tensor) -> None:
        """Add tokens: ``z``, ``s`` of shape (heads, tokens, d)."""
        z, s = z.double(), s.double()
        parts = (z.sum(1), s.sum(1), z.transpose(1, 2) @ z, z.transpose(1, 2) @ s, s.pow(2).sum((1, 2)))
        if self.sz is None:
            self.sz, self.ss, self.szz, self.szs, self.sss = parts
        else:
            for name, part in zip(("sz", "ss", "szz", "szs", "sss"), parts):
                setattr(self, name, getattr(self, name) + part)
        self.n += z.shape[1]

    def squared_error(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> float:
        """``sum ||z W + c - s||^2`` over the tokens and heads (no correction: W = I, c = 0)."""
        if self.sz is None:
            return 0.0
        eye = torch.eye(self.sz.shape[-1], dtype=torch.float64, device=self.sz.device).expand_as(self.szz)
        w = eye if weight is None else weight.double()
        c = torch.zeros_like(self.sz) if bias is None else bias.double()
        quad = (w.transpose(1, 2) @ self.szz @ w).diagonal(dim1=1, dim2=2).sum(-1)
        cross = (w * self.szs).sum((1, 2))
        zw = (self.sz[:, None, :] @ w)[:, 0]
        with_c = 2 * (c * zw).sum(-1) + self.n * c.pow(2).sum(-1) - 2 * (c * self.ss).sum(-1)
        return float((quad - 2 * cross + with_c + self.sss).clamp_min(0).sum())

    def relative_error(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> float:
        """``||Z' - S|| / ||S||`` (Frobenius, over the tokens and heads), Z' the corrected output."""
        ref = float(self.sss.sum()) if self.sss is not None else 0.0
        return (self.squared_error(weight, bias) / ref) ** 0.5 if ref > 0 else 0.0


def fit_correction(stats: HeadStats, kind: str, alpha: float | None = None,
                   bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (H, d, d), c (H, d)) in float64 for ``kind`` ``"scalar"``, ``"channel"`` or ``"head"``,
    ridge strength ``alpha`` (default: ``RIDGE[kind]``). ``bias=False``: c = 0 and W fitted on
    uncentred sums, for an output projection without a bias to fold c into (EuroBERT, ModernBERT)."""
    if stats.sz is None or stats.n < 2:
        raise MonarchConvertError("no tokens to fit the correction on")
    if kind not in RIDGE:
        raise MonarchConvertError(f"correction kind must be one of {', '.join(KINDS[1:])}, got {kind!r}")
    alpha = RIDGE[kind] if alpha is None else alpha
    n, d = stats.n, stats.sz.shape[-1]
    mz, ms = (stats.sz / n, stats.ss / n) if bias else (torch.zeros_like(stats.sz), torch.zeros_like(stats.ss))
    czz = stats.szz - n * mz[:, :, None] * mz[:, None, :]
    czs = stats.szs - n * mz[:, :, None] * ms[:, None, :]
    trace = czz.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-30)  # (H,)
    lam = alpha * trace / d
    eye = torch.eye(d, dtype=torch.float64, device=stats.sz.device)  # the statistics sit where the model ran
    if kind == "head":
        weight = torch.linalg.solve(czz + lam[:, None, None] * eye, czs + lam[:, None, None] * eye)
    elif kind == "scalar":
        gain = (czs.diagonal(dim1=1, dim2=2).sum(-1) + d * lam) / (trace + d * lam)
        weight = gain[:, None, None] * eye
    else:  # "channel"
        gains = (czs.diagonal(dim1=1, dim2=2) + lam[:, None]) / (czz.diagonal(dim1=1, dim2=2) + lam[:, None])
        weight = torch.diag_embed(gains)
    bias = ms - (mz[:, None, :] @ weight)[:, 0]
    return weight, bias


@dataclass
class Calibration:
    """A fitted correction for each converted attention module, by the module's dotted name:
    ``weights[name]`` (heads, dv, dv) and ``biases[name]`` (heads, dv), float32."""

    kind: str
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    biases: dict[str, torch.Tensor] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What ``config.monarch_attention["calibration"]`` records (the tensors live in the file)."""
        return {"file": CALIBRATION_FILE, "kind": self.kind, "modules": sorted(self.weights)}

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        tensors = {f"{name}.weight": w.contiguous() for name, w in self.weights.items()}
        tensors.update({f"{name}.bias": b.contiguous() for name, b in self.biases.items()})
        path = Path(folder) / CALIBRATION_FILE
        save_file(tensors, str(path), metadata={"format": _FORMAT, "kind": self.kind})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except Exception as e:  # safetensors raises its own kinds for a damaged file
            raise MonarchConvertError(f"cannot read the calibration {path}: {e}") from e
        if meta.get("format") != _FORMAT or meta.get("kind") not in KINDS[1:]:
            raise MonarchConvertError(f"{path} is not a monarch-convert calibration ({_FORMAT})")
        names = {key.rsplit(".", 1)[0] for key in tensors}
        return cls(meta["kind"], {n: tensors[f"{n}.weight"] for n in names}, {n: tensors[f"{n}.bias"] for n in names})
