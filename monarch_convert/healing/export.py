"""``monarch-convert MODEL --out DIR --heal DATA --heal-steps N``: healing inside the convert
command, between the conversion and the save (``export.export_checkpoint``).

The data are read before the model is loaded, so that a bad path is a one-line error at once.
The checkpoint folder (default ``DIR.heal-checkpoint`` beside DIR) outlives an interrupted run:
the same command continues from it, and it is removed once DIR is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import MonarchConvertError
from ..interrupts import Interrupted
from .trainable import TRAINABLE, require_peft


@dataclass(frozen=True)
class HealOptions:
    data: Any  # the --heal argument; after check(), the loaded datasets.Dataset
    steps: int = 200
    trainable: str = "attention"
    lr: float = 1e-4
    batch_size: int = 16
    seq_len: Optional[int] = None
    checkpoint: Optional[Path] = None
    name: str = ""  # the data as the user named them (for the report)

    def checkpoint_for(self, out_dir: Path) -> Path:
        return self.checkpoint or out_dir.with_name(out_dir.name + ".heal-checkpoint")


def check(options: HealOptions) -> HealOptions:
    """The options with their data loaded; a one-line error for anything unusable."""
    from ..evaluation.data import load_data
    from ..evaluation.progress import quiet_libraries

    quiet_libraries()  # the command prints its own lines; datasets' bars would split them
    if options.trainable not in TRAINABLE:
        raise MonarchConvertError(f"--heal-trainable must be one of {', '.join(TRAINABLE)}, got {options.trainable!r}")
    for flag, value in (("--heal-steps", options.steps), ("--heal-batch-size", options.batch_size)):
        if value < 1:
            raise MonarchConvertError(f"{flag} must be >= 1, got {value}")
    if options.seq_len is not None and options.seq_len < 2:
        raise MonarchConvertError(f"--heal-seq-len must be >= 2, got {options.seq_len}")
    if not options.lr > 0:
        raise MonarchConvertError(f"--heal-lr must be > 0, got {options.lr}")
    if options.trainable == "lora":
        require_peft()
    return replace(options, data=load_data(options.data), name=str(options.data))


def heal_converted(model: Any, preprocessor: Any, options: HealOptions, out_dir: Path,
                   echo: Callable[..., None]) -> dict:
    """Heal the converted ``model`` as ``options`` say; the report's ``healing`` entry."""
    from .core import heal

    folder = options.checkpoint_for(out_dir)
    echo(f"Healing on {options.name} for {options.steps} steps (checkpoints in {folder}) ...")
    try:
        report = heal(model, options.data, steps=options.steps, trainable=options.trainable, lr=options.lr,
                      batch_size=options.batch_size, seq_len=options.seq_len, processor=preprocessor,
                      checkpoint_dir=folder, checkpoint_every=max(1, min(100, options.steps // 10)),
                      data_name=options.name)
    except Interrupted as exc:
        exc.outcome = f"{exc.outcome}; {out_dir} was left as it was" if exc.outcome else None
        raise
    if report.resumed_from_step is not None:
        echo(f"Resumed from the checkpoint of step {report.resumed_from_step}")
    echo(report.summary())
    return report.to_dict()


def remove_checkpoint(options: HealOptions, out_dir: Path) -> None:
    """Once DIR is written, the checkpoint has served its purpose."""
    shutil.rmtree(options.checkpoint_for(out_dir), ignore_errors=True)
