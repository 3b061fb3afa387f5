"""Test helpers for output corrections: a random calibration of a converted model, and probes that
apply a correction to each head's output explicitly (what folding must equal)."""

from __future__ import annotations

from typing import Callable

import torch

import monarch_convert as mc
from monarch_convert.calibration.correction import Calibration
from monarch_convert.calibration.folding import has_output_bias
from monarch_convert.patches.dispatch import run_spec


def random_calibration(model, kind: str = "head", seed: int = 0) -> Calibration:
    """A correction near the identity for every converted module of ``model`` (no bias where the
    output projection has none to fold it into)."""
    g = torch.Generator().manual_seed(seed)
    cal = Calibration(kind)
    for r in mc.conversion_report(model).converted:
        h, d = r.num_heads, r.head_dim
        cal.weights[r.name] = torch.eye(d).expand(h, d, d) + 0.3 * torch.randn(h, d, d, generator=g)
        cal.biases[r.name] = 0.2 * torch.randn(h, d, generator=g) * has_output_bias(model, r.name)
    return cal


def explicit(calibration: Calibration | None, op: Callable = run_spec) -> Callable[[str], Callable]:
    """For ``passes.probes``: each module runs ``op`` and then applies its correction (if any) to
    each head's output, in the output's dtype: ``z_h W_h + c_h``."""
    def make(name):
        def probe(spec, q, k, v, key_padding, scale):
            z = op(spec, q, k, v, key_padding, scale)
            if calibration is None:
                return z
            w, c = calibration.weights[name].to(z.dtype), calibration.biases[name].to(z.dtype)
            return torch.einsum("bhnd,hde->bhne", z, w) + c[None, :, None, :]
        return probe
    return make
