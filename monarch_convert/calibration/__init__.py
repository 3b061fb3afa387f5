"""Calibrated conversion (issue 14): per-layer settings searched under a FLOPs budget or a
fidelity floor, and a per-head output correction folded into each attention's output projection.

- ``correction.py``: the correction (statistics, ridge fit toward the identity, its error), and
  :class:`~monarch_convert.calibration.correction.Calibration`, saved as ``monarch_calibration.safetensors``.
- ``folding.py``: folding a calibration into the output projections, and undoing it bit for bit.
- ``inputs.py``: the calibration data as model inputs, cut into a fitted and a held-out part.
- ``passes.py``: the passes over the data (per-layer errors, layer-by-layer fits, held-out fidelity).
- ``search.py``: the candidate settings per layer and their allocation under a budget.
- ``run.py``: :func:`~monarch_convert.calibration.run.calibrate`; ``report.py``: its report.
"""
