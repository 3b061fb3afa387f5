"""``heal``: a short distillation of a converted model towards its own softmax original.

A converted model is a zero-shot approximation of its original. Healing trains a few of its
weights (the attention projections by default) so that its outputs on unlabelled data match the
original's: the teacher is the same model on softmax with its original weights
(``teacher.py``), the loss a KL divergence of logits or a relative error of hidden states
(``objective.py``). The fidelity to the original is measured on held-out examples before the
first step and after the last. The student runs in eval mode (no dropout): the target is the
original's deterministic output, and a run's trajectory is then a function of its settings alone,
which is what makes a resumed run identical to an uninterrupted one.

Data parallel: under ``accelerate launch`` (or ``torchrun``) the model is wrapped by
``accelerate`` (DistributedDataParallel); each process takes every P-th example of each step's
batch (``batch_size`` is the global batch) and every P-th held-out batch; the gradients are
averaged and the fidelity sums gathered, as the evaluator does (``evaluation.distributed``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MonarchConvertError
from ..interrupts import Interrupted
from . import checkpoint as checkpoints
from .data import HealData, heal_data, split_held_out
from .loop import Run, held_out_fidelity, train
from .objective import headline, resolve_target
from .teacher import Teacher, bake_calibration
from .trainable import require_peft, selected


@dataclass
class HealReport:
    """What healing did: what was trained, on what, for how long, and the held-out fidelity to
    the original before and after (``to_dict`` for ``conversion.json``)."""

    trainable: str
    trained_parameters: int
    trained_modules: list[str]
    target: str
    headline: str  # the fidelity that sums it up (top1_agreement, embedding_cosine or hidden_cosine)
    data: dict[str, Any]
    steps: int
    batch_size: int
    lr: float
    max_length: int | None
    seed: int
    teacher: str
    fidelity_before: dict[str, float | None]
    fidelity_after: dict[str, float | None]
    wall_time_s: float
    resumed_from_step: int | None = None
    num_processes: int = 1
    calibration_baked_into_weights: bool = False  # a folded calibration became part of the healed weights
    note: str = "the weights were trained: this is a different model from the source, not only a conversion"
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        before, after = self.fidelity_before.get(self.headline), self.fidelity_after.get(self.headline)
        what = f"{self.trainable} ({self.trained_parameters:,} weights)"
        return (f"Healed {what} for {self.steps} steps of {self.batch_size} on {self.data['train_examples']} "
                f"examples in {self.wall_time_s:.0f}s: held-out {self.headline} {_fmt(before)} -> {_fmt(after)} "
                f"({self.data['held_out_examples']} examples)")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def heal(model: Any, data: Any, *, steps: int, teacher: Any = None, trainable: str = "attention", lr: float = 1e-4,
         batch_size: int = 16, seq_len: int | None = None, target: str = "auto", processor: Any = None,
         eval_data: Any = None, eval_samples: int = 256, column: str | None = None, lora_rank: int = 8,
         weight_decay: float = 0.0, warmup_steps: int | None = None, seed: int = 0,
         checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None, resume: bool = True,
         progress: bool = True, data_name: str | None = None) -> HealReport:
    """Distil the converted ``model`` towards its own softmax original on unlabelled ``data``, in place.

    data / eval_data: texts or images (a list, a ``datasets.Dataset``, a local file or folder, or a
        Hub name, read as the evaluator reads them; ``column`` names the text or image column).
        Without ``eval_data``, ``eval_samples`` examples of ``data`` (at most a fifth) are held out.
    steps, batch_size, lr, weight_decay, warmup_steps: AdamW for ``steps`` steps of ``batch_size``
        examples, linear warm-up (default ``min(100, steps // 10)`` steps), then cosine decay to 0.
    teacher: None (the model's own original weights on softmax, see ``healing/teacher.py``) or a model.
    trainable: ``"attention"`` (the converted modules' q/k/v/output projections), ``"all"``, or
        ``"lora"`` (a rank-``lora_rank`` adapter on those projections, merged into the weights at
        the end; needs ``peft``).
    target: ``"logits"`` (KL), ``"hidden"`` (last hidden state), or ``"auto"`` (logits if the model
        has them). seq_len: tokens per text (default: the tokenizer's maximum).
    processor: the model's tokenizer or image processor (default: loaded from ``model.name_or_path``).
    checkpoint_dir: where a checkpoint is written every ``checkpoint_every`` steps, at the end, and
        when Ctrl-C or SIGTERM stops the run (then the exception is raised on); with ``resume``, a
        checkpoint found there is continued from its step (same settings required).

    Returns a :class:`HealReport`; the model is left converted, with its healed weights, in eval mode.
    """
    started = time.perf_counter()
    model, processor = _transformers_model(model, processor)
    _check_readable(model)
    _check_numbers(steps=steps, batch_size=batch_size, eval_samples=eval_samples, lora_rank=lora_rank)
    if not lr > 0 or (checkpoint_every is not None and checkpoint_every < 1):
        raise MonarchConvertError("lr must be > 0 and checkpoint_every >= 1")
    train_data, held_out = _data(model, data, eval_data, processor, column, seq_len, eval_samples, seed)
    run = Run.create(model, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                     warmup_steps=warmup_steps, seed=seed, progress=progress, checkpoint_every=checkpoint_every,
                     checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None)
    was_training = model.training
    model.eval()
    if trainable == "lora":
        require_peft()  # before anything about the model changes
    unfolded = bake_calibration(model)
    try:
        with selected(model, trainable, lora_rank) as chosen:
            report = _heal_selected(run, chosen, Teacher(model, chosen, teacher, unfolded), train_data, held_out,
                                    target, resume)
    finally:
        model.train(was_training)
    report.wall_time_s += time.perf_counter() - started
    report.calibration_baked_into_weights = bool(unfolded)
    report.data["name"] = data_name or (str(data) if isinstance(data, (str, Path)) else type(data).__name__)
    return report


def _transformers_model(model: Any, processor: Any) -> tuple[Any, Any]:
    """A SentenceTransformer is healed through its transformers model (in place), with its tokenizer."""
    from .. import sentence_transformers as st_models

    if not st_models.is_sentence_transformer(model):
        return model, processor
    return st_models.single_transformer(model), processor if processor is not None else model.tokenizer


def _check_readable(model: Any) -> None:
    from ..calibration.inputs import check_readable
    from ..conversion_plan import architecture_patch

    check_readable(architecture_patch(model), "heal", "healed", "use it converted as it is")


def _check_numbers(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MonarchConvertError(f"{name} must be an integer >= 1, got {value!r}")


def _data(model, data, eval_data, processor, column, seq_len, eval_samples, seed) -> tuple[HealData, HealData]:
    from ..conversion import is_converted

    if not is_converted(model):
        raise MonarchConvertError("heal needs a converted model: call monarch_convert.convert(model) first")
    if processor is None:
        from ..preprocessors import load_preprocessor

        source = getattr(model.config, "name_or_path", None)
        processor = load_preprocessor(source) if source else None
    train_data = heal_data(data, processor, model, column=column, max_length=seq_len)
    if eval_data is None:
        return split_held_out(train_data, eval_samples, seed)
    return train_data, heal_data(eval_data, processor, model, column=column, max_length=seq_len, what="eval_data")


def _heal_selected(run: Run, chosen, teacher: Teacher, train_data: HealData, held_out: HealData, target: str,
                   resume: bool) -> HealReport:
    """Measure, train (from a checkpoint if there is one), measure again."""
    probe = held_out.inputs([0])
    target = resolve_target(target, teacher(run.to_device(probe)))
    key = headline(target, "attention_mask" in probe)
    run.start(chosen, target, key, train_data, held_out)
    fingerprint = run.fingerprint(chosen, len(train_data), len(held_out))
    state = checkpoints.load(run.checkpoint_dir, fingerprint) if resume else None
    if state is not None:
        run.restore(state)
    else:
        run.before = held_out_fidelity(run, teacher, "held-out fidelity (before)")
    try:
        train(run, teacher, fingerprint)
    except (KeyboardInterrupt, Interrupted) as exc:
        raise run.interrupted(exc, fingerprint) from None
    after = held_out_fidelity(run, teacher, "held-out fidelity (after)")
    return HealReport(
        trainable=chosen.kind, trained_parameters=chosen.count(run.model), trained_modules=chosen.modules,
        target=target, headline=key,
        data={"kind": train_data.kind, "train_examples": len(train_data), "held_out_examples": len(held_out)},
        steps=run.steps, batch_size=run.batch_size, lr=run.lr, max_length=train_data.max_length, seed=run.seed,
        teacher=_teacher_text(teacher), fidelity_before=run.before, fidelity_after=after,
        wall_time_s=run.previous_elapsed_s, resumed_from_step=run.resumed_from, num_processes=run.dist.world,
        history=run.history,
    )


def _teacher_text(teacher: Teacher) -> str:
    if teacher.given is not None:
        return f"a given model ({type(teacher.given).__name__}) on softmax attention"
    kept = f"a copy of the {len(teacher.originals)} trained weight tensors ({teacher.kept_bytes / 2**20:.1f} MiB)"
    return ("the model's original weights on softmax attention (" +
            (kept if teacher.originals else "LoRA adapter disabled, no copy") + ")")
