"""The model card (``README.md``) of a converted checkpoint: metadata, then one renderer per section.

Each section renderer takes the :class:`CardFacts` read once from the folder and returns its lines,
ending with a blank line when it has any; :func:`build_model_card` joins them in order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import MonarchConfig
from ..evaluation.report import JSON_FILE as EVALUATION_FILE
from ..evaluation.report import MARKDOWN_FILE as EVALUATION_REPORT_FILE
from ..flops import format_flops
from .eval_results import dataset_fields, eval_results, named_metrics
from .folder import read_converted_dir, read_evaluation
from .markdown import cell, format_layers, format_number, format_setting, table
from .pipeline_tags import infer_pipeline_tag
from .public_names import hub_model_id, source_display

CARD_TAGS = ("monarch-attention", "monarch-convert")
PAPER_URL = "https://arxiv.org/abs/2505.18698"
PROJECT_NAME = "monarch-convert"
HUB_URL = "https://huggingface.co"

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model"
)
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json",)
# A preprocessor the folder ships adds its loader to the usage snippet: (files, Auto class, variable).
PREPROCESSORS = (
    (TOKENIZER_FILES, "AutoTokenizer", "tokenizer"),
    (IMAGE_PROCESSOR_FILES, "AutoImageProcessor", "image_processor"),
)
# The conversion table lists MonarchConfig's fields in their order, then any other setting.
SETTING_ORDER = tuple(f.name for f in fields(MonarchConfig))
# Facts of evaluation.json the evaluation section names, in this order.
EVALUATION_FACTS = ("samples", "seed", "device", "dtype")

CITATION = """\
```bibtex
@inproceedings{yaras2025monarchattention,
  title={MonarchAttention: Zero-Shot Conversion to Fast, Hardware-Aware Structured Attention},
  author={Yaras and Xu and Abillama and Lee and Balzano},
  booktitle={Advances in Neural Information Processing Systems},
  year={2025}
}
```"""


@dataclass(frozen=True)
class CardFacts:
    """What the card says, read once from the converted folder."""

    local_dir: Path
    repo_id: str
    revision: Optional[str]  # pinned in the usage snippet unless None or main
    conversion: dict  # conversion.json
    evaluation: Optional[dict]  # evaluation.json, if any
    model_type: Optional[str]
    source: Optional[str]  # as source_display names it
    base_model: Optional[str]  # the source's Hub id, if it is one
    pipeline_tag: Optional[str]
    settings: dict

    @property
    def model_name(self) -> str:
        return self.repo_id.split("/")[-1]

    def has_any(self, names: tuple[str, ...]) -> bool:
        return any((self.local_dir / name).is_file() for name in names)


def build_model_card(local_dir: str | os.PathLike, repo_id: str, *, revision: Optional[str] = None) -> Any:
    """The model card (a ``huggingface_hub.ModelCard``) for the converted checkpoint in ``local_dir``.

    Metadata: ``base_model`` (the source, when it is a Hub id), ``library_name``, ``pipeline_tag``
    (inferred from the source's architecture), ``tags`` (``monarch-attention``, ...) and, when
    ``evaluation.json`` exists, ``eval_results`` (the converted model's metrics, as ``model-index``).
    Body: usage snippet for ``repo_id`` (and ``revision`` when given), conversion settings, converted
    and skipped modules, attention FLOPs, and the before/after evaluation table.
    """
    from huggingface_hub import ModelCard

    facts = read_card_facts(Path(local_dir), repo_id, revision)
    body = [line for section in SECTIONS for line in section(facts)]
    return ModelCard(f"---\n{card_data(facts).to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def read_card_facts(local_dir: Path, repo_id: str, revision: Optional[str]) -> CardFacts:
    """The facts of the converted folder ``local_dir`` that the card states; a one-line error if
    it is not one."""
    config, conversion = read_converted_dir(local_dir)
    model_type = conversion.get("model_type") or config.get("model_type")
    source = conversion.get("source_model")
    # config.json's monarch_attention (what from_pretrained reapplies) also holds the settings,
    # for a conversion.json written without them.
    in_config = config.get("monarch_attention") or {}
    settings = conversion.get("settings") or (in_config.get("settings") if isinstance(in_config, dict) else None) or {}
    return CardFacts(
        local_dir=local_dir,
        repo_id=repo_id,
        revision=revision,
        conversion=conversion,
        evaluation=read_evaluation(local_dir),
        model_type=model_type,
        source=source_display(source),
        base_model=hub_model_id(conversion.get("base_model") or source),
        pipeline_tag=infer_pipeline_tag(config.get("architectures"), model_type),
        settings=settings,
    )


def card_data(facts: CardFacts) -> Any:
    """The card's YAML metadata (a ``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import ModelCardData

    results = eval_results(facts.evaluation, facts.pipeline_tag) if facts.evaluation else []
    return ModelCardData(
        base_model=facts.base_model,
        library_name="transformers",
        pipeline_tag=facts.pipeline_tag,
        tags=list(CARD_TAGS) + ([str(facts.model_type)] if facts.model_type else []),
        model_name=facts.model_name if results else None,  # model-index needs a name
        eval_results=results or None,
    )


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def introduction(facts: CardFacts) -> list[str]:
    if facts.base_model:
        source = f"[{facts.base_model}]({HUB_URL}/{facts.base_model})"
    else:
        source = f"`{facts.source}`" if facts.source else "A source model"
    if _healing(facts):
        how = "then healed (trained by distillation towards the source's softmax outputs, see Healing below)"
        weights = "**The weights differ from the source model's: this is a different model**"
    else:
        how, weights = "zero-shot (no training)", "The weights are the source model's, unchanged"
    return [
        f"# {facts.model_name}",
        "",
        f"{source} with its softmax self-attention replaced by [MonarchAttention]({PAPER_URL}), "
        f"{how}, by [{PROJECT_NAME}](https://pypi.org/project/{PROJECT_NAME}/). "
        f"{weights}; the conversion settings live in `config.json` "
        "(`monarch_attention`) and the conversion report in `conversion.json`.",
        "",
    ]


def _healing(facts: CardFacts) -> Optional[dict]:
    healing = facts.conversion.get("healing")
    return healing if isinstance(healing, dict) else None


def usage(facts: CardFacts) -> list[str]:
    pin = f', revision="{facts.revision}"' if facts.revision and facts.revision != "main" else ""
    load = f'from_pretrained("{facts.repo_id}"{pin})'
    python = ["import monarch_convert", "", f"model = monarch_convert.{load}"]
    sentence_transformer = facts.has_any(("modules.json",))  # its tokenizer comes with it
    if sentence_transformer:
        python[-1] += "  # a SentenceTransformer, with all its modules"
        python += ['embeddings = model.encode(["MonarchAttention, zero-shot"])']
    else:
        for files, auto_class, variable in PREPROCESSORS:
            if facts.has_any(files):
                python += ["", f"from transformers import {auto_class}", f"{variable} = {auto_class}.{load}"]
    return [
        "## Usage",
        "",
        "```bash",
        f"pip install '{PROJECT_NAME}[sentence-transformers]'" if sentence_transformer
        else f"pip install {PROJECT_NAME}",
        "```",
        "",
        "```python",
        *python,
        "```",
        "",
        "Loading this repository with plain `transformers` (`from_pretrained` without monarch-convert) "
        + ("or `sentence_transformers.SentenceTransformer` " if sentence_transformer else "")
        + ("gives the healed weights on softmax attention, which is not the source model." if _healing(facts)
           else "gives the original softmax model."),
        "",
    ]


def conversion_settings(facts: CardFacts) -> list[str]:
    rows = []
    if facts.source:
        rows.append(["source model", f"`{cell(facts.source)}`"])
    if facts.model_type:
        rows.append(["model type", f"`{cell(facts.model_type)}`"])
    keys = [k for k in SETTING_ORDER if k in facts.settings] + [k for k in facts.settings if k not in SETTING_ORDER]
    rows += [[cell(key), cell(format_setting(key, facts.settings[key]))] for key in keys]
    version = facts.conversion.get("monarch_convert_version")
    if version:
        rows.append(["monarch-convert", cell(version)])
    return ["## Conversion", "", *table(("setting", "value"), rows), ""]


def converted_modules(facts: CardFacts) -> list[str]:
    modules = [m for m in facts.conversion.get("modules") or [] if isinstance(m, dict)]
    if not modules:
        return []
    skipped = [m for m in modules if str(m.get("status", "")).lower() != "converted"]
    if not skipped:
        return [f"Converted all {len(modules)} attention modules.", ""]
    groups: dict[tuple[str, str], list[dict]] = {}
    for m in skipped:
        groups.setdefault((str(m.get("status") or "-"), str(m.get("reason") or "-")), []).append(m)
    rows = []
    for (status, reason), members in groups.items():
        layers = [m.get("layer") for m in members if isinstance(m.get("layer"), int)]
        rows.append([cell(status), cell(reason), str(len(members)), format_layers(layers) if layers else "-"])
    return [
        f"Converted {len(modules) - len(skipped)} of {len(modules)} attention modules; left unchanged:",
        "",
        *table(("status", "reason", "modules", "layers"), rows),
        "",
    ]


def attention_flops(facts: CardFacts) -> list[str]:
    flops = facts.conversion.get("attention_flops") or {}
    if not isinstance(flops, dict) or flops.get("softmax") is None or flops.get("monarch") is None:
        return []
    at = f" at sequence length {flops['seq_len']}" if flops.get("seq_len") else ""
    softmax, monarch = format_flops(flops["softmax"]), format_flops(flops["monarch"])
    text = f"Attention FLOPs{at}: softmax {softmax}, MonarchAttention {monarch}"
    try:
        share = f" ({100.0 * float(flops['monarch']) / float(flops['softmax']):.1f}% of softmax)."
    except (TypeError, ValueError, ZeroDivisionError):
        share = "."
    return [text + share, ""]


def healing_summary(facts: CardFacts) -> list[str]:
    """What healing trained, on what, for how long, and the held-out fidelity before and after."""
    healing = _healing(facts)
    if not healing:
        return []
    key = healing.get("headline")
    before, after = (healing.get(f) or {} for f in ("fidelity_before", "fidelity_after"))
    data = healing.get("data") or {}
    count = healing.get("trained_parameters")
    rows = [["trained", cell(f"{healing.get('trainable')} ({count:,} weights)" if isinstance(count, int)
                             else str(healing.get("trainable")))],
            ["data", cell(f"{data.get('name')}: {data.get('train_examples')} examples, "
                          f"{data.get('held_out_examples')} held out")],
            ["steps", cell(f"{healing.get('steps')} of {healing.get('batch_size')}, lr {healing.get('lr')}")],
            ["matched", cell(healing.get("target"))], ["teacher", cell(healing.get("teacher"))],
            [cell(f"held-out {key}"), cell(f"{format_number(before.get(key))} -> {format_number(after.get(key))}")]]
    return ["## Healing", "", *table(("healing", "value"), rows), ""]


def evaluation_summary(facts: CardFacts) -> list[str]:
    report = facts.evaluation
    if not report:
        return []
    lines = ["## Evaluation", ""]
    measured = evaluation_facts(report)
    if measured:
        lines += ["Measured by `monarch-convert eval`: " + ", ".join(measured) + ".", ""]
    lines += metrics_table(report)
    settings = report.get("settings")
    if isinstance(settings, dict) and settings and settings != facts.settings:
        shown = ", ".join(f"{key}={format_setting(key, value)}" for key, value in settings.items())
        lines += [f"Evaluated with the settings: {cell(shown)}.", ""]
    if facts.has_any((EVALUATION_REPORT_FILE,)):
        link = f"[{EVALUATION_REPORT_FILE}]({EVALUATION_REPORT_FILE})"
        lines += [f"Full report: {link} (raw numbers in `{EVALUATION_FILE}`).", ""]
    return lines


def evaluation_facts(report: dict) -> list[str]:
    """What was measured on what: task, dataset, sample count, seed, device and dtype."""
    dataset = dataset_fields(report)
    measured = []
    if report.get("task"):
        measured.append(f"task `{cell(report['task'])}`")
    if dataset.name:
        extra = "/".join(x for x in (dataset.config, dataset.split) if x)
        measured.append(f"dataset `{cell(dataset.name)}`" + (f" ({cell(extra)})" if extra else ""))
    measured += [f"{key} {cell(report[key])}" for key in EVALUATION_FACTS if report.get(key) is not None]
    return measured


def metrics_table(report: dict) -> list[str]:
    """Each metric before and after conversion, and the difference."""
    metrics = named_metrics(report)
    if not metrics:
        return []
    rows = [
        [cell(m["name"]), format_number(m.get("original")), format_number(m.get("converted")),
         format_number(_delta(m), signed=True)]
        for m in metrics
    ]
    return [*table(("metric", "original (softmax)", "converted (MonarchAttention)", "delta"), rows), ""]


def _delta(metric: dict) -> Any:
    original, converted = metric.get("original"), metric.get("converted")
    if metric.get("delta") is None and isinstance(original, (int, float)) and isinstance(converted, (int, float)):
        return converted - original
    return metric.get("delta")


def citation(facts: CardFacts) -> list[str]:
    return ["## Citation", "", CITATION]


SECTIONS: tuple[Callable[[CardFacts], list[str]], ...] = (
    introduction,
    usage,
    conversion_settings,
    converted_modules,
    attention_flops,
    healing_summary,
    evaluation_summary,
    citation,
)
