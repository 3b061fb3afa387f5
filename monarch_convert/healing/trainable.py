"""Which weights healing moves: the attention projections of the converted modules, every
weight, or a LoRA adapter on those projections (through ``peft``, an optional dependency).

The attention projections are the ``nn.Linear`` layers of each converted module (BART's and ViT's
``q/k/v/o`` projections), and, for a module that holds only ``query/key/value`` (BERT's
``attention.self``), the ``nn.Linear`` layers of its parent's other children (BERT's
``attention.output.dense``): the output projection that mixes the heads the module computed.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import MonarchConvertError

TRAINABLE = ("attention", "all", "lora")


def attention_projections(model: Any) -> list[str]:
    """The dotted names of the ``nn.Linear`` projections of every converted attention module."""
    import torch

    from ..conversion import conversion_report

    names: list[str] = []
    for record in conversion_report(model).converted:
        module = model.get_submodule(record.name)
        inside = [f"{record.name}.{n}" for n, m in module.named_modules() if n and isinstance(m, torch.nn.Linear)]
        if len(inside) == 3 and "." in record.name:  # q, k, v only: the output projection is the parent's
            parent_name = record.name.rsplit(".", 1)[0]
            parent = model.get_submodule(parent_name)
            inside += [f"{parent_name}.{n}" for n, m in parent.named_modules()
                       if n and isinstance(m, torch.nn.Linear) and f"{parent_name}.{n}" not in inside]
        names += inside
    return names


@dataclass
class Trainable:
    """The weights that move (by name, as ``model.named_parameters()`` gives them while healing),
    and how to undo what selecting them changed."""

    kind: str
    modules: list[str]  # the projections ("attention", "lora"); empty for "all"
    names: list[str] = field(default_factory=list)
    peft_model: Any = None  # "lora": the PeftModel wrapping the model
    flags: dict[str, bool] = field(default_factory=dict)  # requires_grad of every weight before healing

    def parameters(self, model: Any) -> list:
        named = dict(model.named_parameters())
        return [named[n] for n in self.names]

    def count(self, model: Any) -> int:
        return sum(p.numel() for p in self.parameters(model))

    def original_weights_context(self):
        """Inside it, the model runs with its original weights as far as this selection can say:
        the LoRA adapter disabled; nothing for the others (the teacher passes the originals)."""
        return self.peft_model.disable_adapter() if self.peft_model is not None else nullcontext()


def select(model: Any, kind: str, lora_rank: int = 8) -> Trainable:
    """Freeze every weight but the ones ``kind`` names ("attention", "all", "lora"); for "lora",
    add the adapter (in place: the model's projections become LoRA layers until :func:`finish`)."""
    if kind not in TRAINABLE:
        raise MonarchConvertError(f"trainable must be one of {', '.join(TRAINABLE)}, got {kind!r}")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modules = attention_projections(model) if kind != "all" else []
    peft_model = add_lora(model, modules, lora_rank) if kind == "lora" else None
    for name, p in model.named_parameters():
        if kind == "all":
            p.requires_grad_(True)
        elif kind == "attention":
            p.requires_grad_(name.rsplit(".", 1)[0] in modules)
        else:  # peft froze the base weights and made the adapter's trainable
            p.requires_grad_(p.requires_grad and "lora_" in name)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return Trainable(kind, modules, names, peft_model, flags)


def require_peft() -> Any:
    """The ``peft`` module, or a one-line error that says how to install it."""
    try:
        import peft
    except ImportError as e:
        raise MonarchConvertError(
            "trainable 'lora' needs the peft package: pip install 'monarch-convert[heal]' (or pip install peft)"
        ) from e
    return peft


def add_lora(model: Any, modules: list[str], rank: int) -> Any:
    """A ``peft`` LoRA adapter of rank ``rank`` on ``modules``, injected into ``model`` in place."""
    peft = require_peft()
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=modules, bias="none")
    return peft.get_peft_model(model, config)


def finish(model: Any, trainable: Trainable) -> None:
    """Merge a LoRA adapter into the weights (the model's projections are plain ``nn.Linear``
    layers again) and give every weight back its ``requires_grad``."""
    if trainable.peft_model is not None:
        trainable.peft_model.merge_and_unload()
    for name, p in model.named_parameters():
        p.requires_grad_(trainable.flags.get(name, False))


@contextmanager
def selected(model: Any, kind: str, lora_rank: int = 8) -> Iterator[Trainable]:
    """:func:`select` for the block, :func:`finish` at its end, whatever happens in it."""
    trainable = select(model, kind, lora_rank)
    try:
        yield trainable
    finally:
        finish(model, trainable)
