"""Share a converted checkpoint on the Hugging Face Hub, with a model card that carries its evaluation.

Public API:

- :func:`push_to_hub` uploads a converted folder (weights, config, tokenizer or image processor,
  ``conversion.json``, ``evaluation.json``/``.md`` when present) plus a generated model card
  (``README.md``) in one commit. The local folder is only read, never modified.
- :func:`build_model_card` renders that card (a huggingface_hub ``ModelCard``) from the folder.
- :func:`upload_command` is the ``monarch-convert upload DIR REPO_ID`` command;
  :func:`push_converted_dir` is what ``monarch-convert MODEL --out DIR --push-to-hub REPO_ID`` calls.

Auth: ``token=`` if given, else huggingface_hub's ``get_token()`` (``HF_TOKEN``, then the login
cache of ``hf auth login``). The token is passed to huggingface_hub only: it is never printed,
logged or written, and it is scrubbed from every error message.

Test seam: ``api=`` takes any object with ``HfApi``'s ``create_repo`` / ``create_branch`` /
``create_commit``; the default is a real ``HfApi``. The tests drive the real ``HfApi`` with
huggingface_hub's HTTP client replaced by a recording fake (``huggingface_hub.set_client_factory``).

Only typer and the standard library are imported at module level (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from .errors import MonarchConvertError
from .flops import format_flops

logger = logging.getLogger(__name__)

CARD_TAGS = ("monarch-attention", "monarch-convert")
PAPER_URL = "https://arxiv.org/abs/2505.18698"
PROJECT_NAME = "monarch-convert"
HUB_URL = "https://huggingface.co"

# ---------------------------------------------------------------------------------------------
# pipeline_tag inference: table-driven, first match wins.
# (model_type or None for any, architecture suffix, pipeline tag)
# ---------------------------------------------------------------------------------------------
PIPELINE_TAG_RULES: tuple[tuple[Optional[str], str, str], ...] = (
    ("bart", "ForConditionalGeneration", "summarization"),
    ("pegasus", "ForConditionalGeneration", "summarization"),
    ("t5", "ForConditionalGeneration", "text2text-generation"),
    (None, "ForConditionalGeneration", "text2text-generation"),
    (None, "ForSequenceClassification", "text-classification"),
    (None, "ForTokenClassification", "token-classification"),
    (None, "ForQuestionAnswering", "question-answering"),
    (None, "ForMaskedLM", "fill-mask"),
    (None, "ForCausalLM", "text-generation"),
    (None, "ForImageClassification", "image-classification"),
    (None, "ForImageClassificationWithTeacher", "image-classification"),
    (None, "ForSemanticSegmentation", "image-segmentation"),
    (None, "ForObjectDetection", "object-detection"),
    (None, "ForAudioClassification", "audio-classification"),
    (None, "ForMultipleChoice", "multiple-choice"),
    (None, "ForMaskedImageModeling", "image-feature-extraction"),
)
# Bare encoders (BertModel, ViTModel, ...): feature extraction, by modality.
VISION_MODEL_TYPES = frozenset(
    {"vit", "deit", "beit", "dinov2", "swin", "swinv2", "vit_mae", "vit_msn", "data2vec-vision", "levit", "dpt"}
)
# Tags the Hub knows as pipeline tags (also used to tell a task id from a free-form task name).
KNOWN_PIPELINE_TAGS = frozenset(tag for _, _, tag in PIPELINE_TAG_RULES) | {
    "feature-extraction",
    "image-feature-extraction",
    "sentence-similarity",
    "translation",
    "zero-shot-classification",
}

# The evaluator's task names that are not Hub pipeline tags.
TASK_TYPE_ALIASES = {"sentence-embedding": "feature-extraction", "sequence-classification": "text-classification"}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json",)


def infer_pipeline_tag(architectures: Optional[list[str]], model_type: Optional[str]) -> Optional[str]:
    """The Hub pipeline tag for a model, from its ``architectures`` and ``model_type``; None if unknown."""
    model_type = (model_type or "").lower()
    for arch in architectures or []:
        for rule_type, suffix, tag in PIPELINE_TAG_RULES:
            if arch.endswith(suffix) and (rule_type is None or rule_type == model_type):
                return tag
    for arch in architectures or []:
        if arch.endswith("Model") and not arch.endswith("PreTrainedModel"):
            return "image-feature-extraction" if model_type in VISION_MODEL_TYPES else "feature-extraction"
    return None


# ---------------------------------------------------------------------------------------------
# Reading the converted folder
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path, *, required: bool) -> Optional[dict]:
    if not path.is_file():
        if required:
            raise MonarchConvertError(
                f"{path.parent} is not a converted checkpoint: {path.name} is missing "
                f"(write one with `monarch-convert MODEL --out {shlex.quote(str(path.parent))}`)"
            )
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if required:
            raise MonarchConvertError(f"cannot read {path}: {exc}") from None
        logger.warning("ignoring %s: %s", path, exc)
        return None
    if not isinstance(data, dict):
        if required:
            raise MonarchConvertError(f"cannot read {path}: expected a JSON object")
        return None
    return data


def _check_dir(local_dir: Path) -> None:
    if not local_dir.is_dir():
        raise MonarchConvertError(f"{local_dir} is not a folder: give the folder written by `monarch-convert MODEL --out DIR`")
    _read_json(local_dir / "config.json", required=True)
    _read_json(local_dir / "conversion.json", required=True)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}(/[A-Za-z0-9][\w.\-]{0,95})?$")


def _hub_model_id(source: Any) -> Optional[str]:
    """``source`` if it looks like a Hub model id (not a local path), else None."""
    if not isinstance(source, str) or not _HUB_ID.match(source) or ".." in source:
        return None
    if source.endswith((".", "-")) or os.path.isabs(source):
        return None
    if os.path.exists(source):  # a local folder, not an id
        return None
    return source


def _source_display(source: Any) -> Optional[str]:
    """How the card and commit name the source: a Hub id as is, a local folder by its name only
    (a public card should not reveal the uploader's file system)."""
    if not source:
        return None
    if _hub_model_id(source):
        return str(source)
    name = Path(str(source).rstrip("/\\")).name or str(source)
    return f"{name} (local folder)"


def _format_layers(layers: Any) -> str:
    if layers is None:
        return "-"
    if isinstance(layers, str):
        return layers
    try:
        values = sorted({int(x) for x in layers})
    except (TypeError, ValueError):
        return str(layers)
    if not values:
        return "none"
    runs, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(runs)


def _format_number(value: Any, *, signed: bool = False) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        if value != value:  # NaN
            return "nan"
        digits = 2 if abs(value) >= 1 else 4
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def _cell(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def _is_local_path(text: str) -> bool:
    return text.startswith(("/", ".", "~", "\\")) or (len(text) > 1 and text[1] == ":") or os.path.exists(text)


def _dataset_fields(evaluation: dict) -> tuple[Optional[str], Optional[str], Optional[str], Optional[str]]:
    """(id, pretty name, config, split) of the evaluation's dataset; a string or a dict is accepted."""
    dataset = evaluation.get("dataset")
    split = evaluation.get("split")
    if isinstance(dataset, dict):
        ident = dataset.get("id") or dataset.get("path") or dataset.get("name")
        name = dataset.get("name") or ident
        config = dataset.get("config")
        split = dataset.get("split") or split
    elif isinstance(dataset, str) and dataset.strip():
        ident = name = dataset.strip()
        config = None
    else:
        return None, None, None, None
    if ident and _is_local_path(str(ident)):  # a local file: its name only, never the uploader's path
        ident = Path(str(ident).rstrip("/\\")).name or str(ident)
        name = ident if name is None or _is_local_path(str(name)) else name
    return (
        str(ident) if ident else None,
        str(name) if name else None,
        str(config) if config else None,
        str(split) if split else None,
    )


def _eval_results(evaluation: dict, pipeline_tag: Optional[str]) -> list:
    from huggingface_hub import EvalResult

    dataset_id, dataset_name, dataset_config, dataset_split = _dataset_fields(evaluation)
    task = evaluation.get("task")
    task_type = TASK_TYPE_ALIASES.get(task, task) if isinstance(task, str) else None
    if task_type not in KNOWN_PIPELINE_TAGS:
        task_type = pipeline_tag or task_type
    if not dataset_id or not task_type:
        return []
    results = []
    for metric in evaluation.get("metrics") or []:
        if not isinstance(metric, dict) or not metric.get("name"):
            continue
        value = metric.get("converted")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            continue
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=str(task) if task else None,
                dataset_type=dataset_id,
                dataset_name=dataset_name or dataset_id,
                dataset_config=dataset_config,
                dataset_split=dataset_split,
                metric_type=str(metric["name"]).lower().replace(" ", "_"),
                metric_name=str(metric["name"]),
                metric_value=round(float(value), 6),
            )
        )
    return results


# ---------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------
def build_model_card(local_dir: str | os.PathLike, repo_id: str, *, revision: Optional[str] = None):
    """The model card (a ``huggingface_hub.ModelCard``) for the converted checkpoint in ``local_dir``.

    Metadata: ``base_model`` (the source, when it is a Hub id), ``library_name``, ``pipeline_tag``
    (inferred from the source's architecture), ``tags`` (``monarch-attention``, ...) and, when
    ``evaluation.json`` exists, ``eval_results`` (the converted model's metrics, as ``model-index``).
    Body: usage snippet for ``repo_id`` (and ``revision`` when given), conversion settings, converted
    and skipped modules, attention FLOPs, and the before/after evaluation table.
    """
    from huggingface_hub import ModelCard, ModelCardData

    local_dir = Path(local_dir)
    _check_dir(local_dir)
    config = _read_json(local_dir / "config.json", required=True) or {}
    conversion = _read_json(local_dir / "conversion.json", required=True) or {}
    evaluation = _read_json(local_dir / "evaluation.json", required=False)

    model_type = conversion.get("model_type") or config.get("model_type")
    source = conversion.get("source_model")
    base_model = _hub_model_id(conversion.get("base_model") or source)
    pipeline_tag = infer_pipeline_tag(config.get("architectures"), model_type)
    in_config = config.get("monarch_attention") or {}
    settings = conversion.get("settings") or (in_config.get("settings") if isinstance(in_config, dict) else None) or {}
    model_name = repo_id.split("/")[-1]
    eval_results = _eval_results(evaluation, pipeline_tag) if evaluation else []

    tags = list(CARD_TAGS) + ([str(model_type)] if model_type else [])
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )

    has_tokenizer = any((local_dir / f).is_file() for f in TOKENIZER_FILES)
    has_image_processor = any((local_dir / f).is_file() for f in IMAGE_PROCESSOR_FILES)
    revision_arg = f', revision="{revision}"' if revision and revision != "main" else ""

    lines: list[str] = []
    add = lines.append
    add(f"# {model_name}")
    add("")
    source_shown = _source_display(source)
    source_link = f"[{base_model}]({HUB_URL}/{base_model})" if base_model else (f"`{source_shown}`" if source_shown else "A source model")
    add(
        f"{source_link} with its softmax self-attention replaced by [MonarchAttention]({PAPER_URL}), "
        f"zero-shot (no training), by [{PROJECT_NAME}](https://pypi.org/project/{PROJECT_NAME}/). "
        "The weights are the source model's, unchanged; the conversion settings live in `config.json` "
        "(`monarch_attention`) and the conversion report in `conversion.json`."
    )
    add("")
    add("## Usage")
    add("")
    add("```bash")
    add(f"pip install {PROJECT_NAME}")
    add("```")
    add("")
    add("```python")
    add("import monarch_convert")
    add("")
    add(f'model = monarch_convert.from_pretrained("{repo_id}"{revision_arg})')
    if has_tokenizer:
        add("")
        add("from transformers import AutoTokenizer")
        add(f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{revision_arg})')
    if has_image_processor:
        add("")
        add("from transformers import AutoImageProcessor")
        add(f'image_processor = AutoImageProcessor.from_pretrained("{repo_id}"{revision_arg})')
    add("```")
    add("")
    add(
        "Loading this repository with plain `transformers` (`from_pretrained` without monarch-convert) "
        "gives the original softmax model."
    )
    add("")

    add("## Conversion")
    add("")
    add("| setting | value |")
    add("|---|---|")
    if source_shown:
        add(f"| source model | `{_cell(source_shown)}` |")
    if model_type:
        add(f"| model type | `{_cell(model_type)}` |")
    for key in ("block_size", "num_steps", "pad_type", "layers", "backend"):
        if key in settings:
            value = _format_layers(settings[key]) if key == "layers" else settings[key]
            add(f"| {key} | {_cell(value)} |")
    for key, value in settings.items():
        if key not in ("block_size", "num_steps", "pad_type", "layers", "backend"):
            add(f"| {_cell(key)} | {_cell(value)} |")
    version = conversion.get("monarch_convert_version")
    if version:
        add(f"| monarch-convert | {_cell(version)} |")
    add("")

    modules = [m for m in conversion.get("modules") or [] if isinstance(m, dict)]
    if modules:
        converted = [m for m in modules if str(m.get("status", "")).lower() == "converted"]
        skipped = [m for m in modules if m not in converted]
        if not skipped:
            add(f"Converted all {len(modules)} attention modules.")
        else:
            add(f"Converted {len(converted)} of {len(modules)} attention modules; left unchanged:")
            add("")
            groups: dict[tuple[str, str], list] = {}
            for m in skipped:
                key = (str(m.get("status") or "-"), str(m.get("reason") or "-"))
                groups.setdefault(key, []).append(m)
            add("| status | reason | modules | layers |")
            add("|---|---|---|---|")
            for (status, reason), members in groups.items():
                layers = [m.get("layer") for m in members if isinstance(m.get("layer"), int)]
                add(f"| {_cell(status)} | {_cell(reason)} | {len(members)} | {_format_layers(layers) if layers else '-'} |")
        add("")

    flops = conversion.get("attention_flops") or {}
    if isinstance(flops, dict) and flops.get("softmax") is not None and flops.get("monarch") is not None:
        seq = flops.get("seq_len")
        text = f"Attention FLOPs{f' at sequence length {seq}' if seq else ''}: softmax {format_flops(flops['softmax'])}, MonarchAttention {format_flops(flops['monarch'])}"
        try:
            text += f" ({100.0 * float(flops['monarch']) / float(flops['softmax']):.1f}% of softmax)."
        except (TypeError, ValueError, ZeroDivisionError):
            text += "."
        add(text)
        add("")

    if evaluation:
        add("## Evaluation")
        add("")
        facts = []
        _, dataset_name, dataset_config, dataset_split = _dataset_fields(evaluation)
        if evaluation.get("task"):
            facts.append(f"task `{_cell(evaluation['task'])}`")
        if dataset_name:
            extra = "/".join(x for x in (dataset_config, dataset_split) if x)
            facts.append(f"dataset `{_cell(dataset_name)}`" + (f" ({_cell(extra)})" if extra else ""))
        for key, label in (("samples", "samples"), ("seed", "seed"), ("device", "device"), ("dtype", "dtype")):
            if evaluation.get(key) is not None:
                facts.append(f"{label} {_cell(evaluation[key])}")
        if facts:
            add("Measured by `monarch-convert eval`: " + ", ".join(facts) + ".")
            add("")
        metrics = [m for m in evaluation.get("metrics") or [] if isinstance(m, dict) and m.get("name")]
        if metrics:
            add("| metric | original (softmax) | converted (MonarchAttention) | delta |")
            add("|---|---|---|---|")
            for m in metrics:
                delta = m.get("delta")
                if delta is None and isinstance(m.get("original"), (int, float)) and isinstance(m.get("converted"), (int, float)):
                    delta = m["converted"] - m["original"]
                add(
                    f"| {_cell(m['name'])} | {_format_number(m.get('original'))} | "
                    f"{_format_number(m.get('converted'))} | {_format_number(delta, signed=True)} |"
                )
            add("")
        eval_settings = evaluation.get("settings")
        if isinstance(eval_settings, dict) and eval_settings and eval_settings != settings:
            shown = ", ".join(f"{k}={_format_layers(v) if k == 'layers' else v}" for k, v in eval_settings.items())
            add(f"Evaluated with the settings: {_cell(shown)}.")
            add("")
        if (local_dir / "evaluation.md").is_file():
            add("Full report: [evaluation.md](evaluation.md) (raw numbers in `evaluation.json`).")
            add("")

    add("## Citation")
    add("")
    add("```bibtex")
    add("@inproceedings{yaras2025monarchattention,")
    add("  title={MonarchAttention: Zero-Shot Conversion to Fast, Hardware-Aware Structured Attention},")
    add("  author={Yaras and Xu and Abillama and Lee and Balzano},")
    add("  booktitle={Advances in Neural Information Processing Systems},")
    add("  year={2025}")
    add("}")
    add("```")

    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)


# ---------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------
_SKIP_DIRS = {"__pycache__"}


def _files_to_upload(local_dir: Path) -> list[tuple[str, Path]]:
    """(path in repo, local path) of every regular file, hidden files and folders excluded."""
    files = []
    for root, dirs, names in os.walk(local_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(names):
            if name.startswith(".") or name.endswith((".pyc", ".lock", ".tmp")):
                continue
            path = Path(root) / name
            if path.is_file():
                files.append((path.relative_to(local_dir).as_posix(), path))
    return files


def retry_command(local_dir, repo_id: str, *, private: bool = False, revision: Optional[str] = None, create_pr: bool = False) -> str:
    """The ``monarch-convert upload ...`` command that retries the upload of ``local_dir`` alone."""
    parts = ["monarch-convert", "upload", shlex.quote(str(local_dir)), shlex.quote(repo_id)]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", shlex.quote(revision)]
    if create_pr:
        parts.append("--create-pr")
    return " ".join(parts)


def _scrub(text: str, token: Optional[str]) -> str:
    if token:
        text = text.replace(token, "***")
    text = re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
    return " ".join(text.split())


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_network_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "NetworkError", "TimeoutException", "ConnectError", "ConnectionError", "Timeout"}) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def _describe_failure(exc: BaseException, repo_id: str, revision: Optional[str]) -> str:
    """One-line reason for a failed upload (without the retry hint)."""
    from huggingface_hub import errors as hf_errors

    card_rejected = any(str(err).startswith("Invalid metadata in README.md") for err in _causes(exc))
    for err in _causes(exc):
        if card_rejected and isinstance(err, hf_errors.HfHubHTTPError):
            server = getattr(err, "server_message", None) or str(err).splitlines()[0]
            return f"the Hub rejected the model card's metadata: {_short(' '.join(str(server).split()))}"
        if isinstance(err, hf_errors.OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE is set, so the Hub cannot be reached: unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to upload"
        if isinstance(err, hf_errors.HfHubHTTPError):
            response = getattr(err, "response", None)
            status = getattr(response, "status_code", None)
            server = getattr(err, "server_message", None) or str(err).splitlines()[0]
            server = _short(" ".join(str(server).split()))
            if status == 401:
                return (
                    "the Hub rejected the token (401 Unauthorized): it is invalid or expired; "
                    "set HF_TOKEN to a token with write access or run `hf auth login`"
                )
            if status == 403:
                return (
                    f"no write access to {repo_id} (403 Forbidden): use a token with write permission "
                    f"for this namespace ({server})"
                )
            if isinstance(err, hf_errors.RevisionNotFoundError):
                return f"branch {revision!r} not found in {repo_id} (404): {server}"
            if isinstance(err, hf_errors.RepositoryNotFoundError) or status == 404:
                return f"repository {repo_id} not found or not accessible with this token (404)"
            if status == 413:
                return f"the Hub rejected the upload as too large (413): {server}"
            if status == 429:
                return "the Hub is rate-limiting this account (429 Too Many Requests): wait and retry"
            if status is not None and status >= 500:
                return f"the Hub failed with a server error ({status}): {server}"
            return f"the Hub rejected the upload ({status}): {server}"
        if isinstance(err, hf_errors.HFValidationError):
            return f"invalid repository id {repo_id!r}: {_short(' '.join(str(err).split()))}"
        if _is_network_error(err):
            detail = " ".join(str(err).split()) or type(err).__name__
            return f"network error while talking to the Hub ({type(err).__name__}: {_short(detail)})"
    return f"the upload failed ({type(exc).__name__}: {_short(' '.join(str(exc).split()))})"


def _default_commit_message(local_dir: Path) -> str:
    from . import __version__

    conversion = _read_json(local_dir / "conversion.json", required=False) or {}
    source = _source_display(conversion.get("source_model"))
    what = f"{source} converted" if source else "Checkpoint converted"
    return f"{what} to MonarchAttention with monarch-convert {conversion.get('monarch_convert_version') or __version__}"


def push_to_hub(
    local_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    create_pr: bool = False,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    api: Any = None,
):
    """Upload the converted checkpoint in ``local_dir`` to the Hub model repo ``repo_id`` in one commit.

    Creates the repo if needed (``private`` applies only when it is created), creates branch
    ``revision`` if it does not exist, and commits every file of ``local_dir`` (hidden files
    excluded) plus a generated model card as ``README.md`` (unless ``local_dir`` has its own
    ``README.md``, which is uploaded as it is). With ``create_pr`` the commit opens a pull request.
    ``local_dir`` is never modified.

    Returns the ``huggingface_hub.CommitInfo`` (``.commit_url``, ``.oid``, ``.pr_url``, ``.repo_url``).
    Raises ``MonarchConvertError`` (one line, with the ``monarch-convert upload`` command that
    retries) on a missing token, a rejected token or permission, a network error or a rejected upload.
    """
    local_dir = Path(local_dir)
    _check_dir(local_dir)
    hint = retry_command(local_dir, repo_id, private=private, revision=revision, create_pr=create_pr)
    saved = f"nothing was lost: {local_dir} is intact; retry the upload alone with `{hint}`"

    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as exc:
        raise MonarchConvertError(f"invalid repository id {repo_id!r}: {_short(' '.join(str(exc).split()))}") from None

    token = token or get_token()
    if not token:
        raise MonarchConvertError(
            "no Hugging Face token found: set HF_TOKEN to a token with write access or run `hf auth login`; "
            + saved
        )

    if api is None:
        from . import __version__

        api = HfApi(library_name=PROJECT_NAME, library_version=__version__)

    def fail(exc: Exception) -> MonarchConvertError:
        reason = _describe_failure(exc, repo_id, revision)
        return MonarchConvertError(_scrub(f"upload to {repo_id} failed: {reason}; {saved}", token))

    try:
        repo_url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        full_id = getattr(repo_url, "repo_id", None) or repo_id
        if revision and revision != "main" and not revision.startswith("refs/"):
            api.create_branch(full_id, branch=revision, token=token, repo_type="model", exist_ok=True)
    except Exception as exc:
        raise fail(exc) from None

    files = _files_to_upload(local_dir)
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in files]
    if not any(rel == "README.md" for rel, _ in files):
        card = build_model_card(local_dir, full_id, revision=None if create_pr else revision)
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8")))
    try:
        info = api.create_commit(
            full_id,
            operations=operations,
            commit_message=commit_message or _default_commit_message(local_dir),
            token=token,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
        )
    except Exception as exc:
        raise fail(exc) from None
    return info


def push_converted_dir(
    local_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    create_pr: bool = False,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    api: Any = None,
    echo: Optional[Callable[..., Any]] = None,
):
    """``push_to_hub`` with progress lines, for the CLI (``--push-to-hub`` and ``upload``)."""
    echo = echo or typer.echo
    local_dir = Path(local_dir)
    _check_dir(local_dir)
    files = _files_to_upload(local_dir)
    size = sum(path.stat().st_size for _, path in files)
    where = f" (branch {revision})" if revision else ""
    how = "opening a pull request on" if create_pr else "pushing to"
    echo(f"Uploading {len(files)} files ({size / 1e6:.1f} MB) from {local_dir}, {how} {HUB_URL}/{repo_id}{where} ...")
    info = push_to_hub(
        local_dir,
        repo_id,
        private=private,
        revision=revision,
        create_pr=create_pr,
        token=token,
        commit_message=commit_message,
        api=api,
    )
    pr_url = getattr(info, "pr_url", None)
    if pr_url:
        echo(f"Opened pull request: {pr_url}")
    else:
        echo(f"Uploaded: {getattr(info, 'commit_url', None) or info}")
    return info


def upload_command(
    local_dir: Path = typer.Argument(..., help="Converted checkpoint folder (written by `monarch-convert MODEL --out DIR`)."),
    repo_id: str = typer.Argument(..., help="Hub model repo id, e.g. your-name/bert-base-monarch; created if missing."),
    private: bool = typer.Option(False, "--private", help="Create the repo private (no effect on an existing repo)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to push to (created if missing); default main."),
    create_pr: bool = typer.Option(False, "--create-pr", help="Open a pull request instead of pushing directly."),
    commit_message: Optional[str] = typer.Option(None, "--commit-message", help="Commit message (default: describes the conversion)."),
) -> None:
    """Upload a converted checkpoint folder to the Hugging Face Hub, with a generated model card.

    Auth: HF_TOKEN, or the login cache of `hf auth login`.
    """
    push_converted_dir(
        local_dir, repo_id, private=private, revision=revision, create_pr=create_pr, commit_message=commit_message
    )
