"""Healing: a short distillation of a converted model towards its own softmax original.

:func:`monarch_convert.heal` (``healing/core.py``) is the entry point. The modules, one job each:
``loop.py`` (the training loop and the held-out measurement), ``data.py`` (what is trained and
measured on, in a fixed order), ``trainable.py`` (which weights move, LoRA included),
``teacher.py`` (the original model's outputs, without a second copy of the weights where
possible), ``objective.py`` (the loss and the fidelity), ``checkpoint.py`` (saving and resuming),
``export.py`` (``monarch-convert MODEL --out DIR --heal DATA``). Importing this package imports
neither torch nor transformers.
"""
