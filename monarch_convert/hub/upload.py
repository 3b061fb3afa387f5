"""Upload a converted folder to a Hub model repo in one commit, with a generated model card.

Auth: ``token=`` if given, else huggingface_hub's ``get_token()`` (``HF_TOKEN``, then the login
cache of ``hf auth login``). The token is passed to huggingface_hub only: it is never printed,
logged or written, and it is scrubbed from every error message.

Test seam: ``api=`` takes any object with ``HfApi``'s ``create_repo`` / ``create_branch`` /
``create_commit``; the default is a real ``HfApi``. The tests drive the real ``HfApi`` with
huggingface_hub's HTTP client replaced by a recording fake (``huggingface_hub.set_client_factory``).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Optional

from .. import __version__
from ..errors import MonarchConvertError
from .card import PROJECT_NAME, build_model_card
from .failures import brief, describe_failure, scrub
from .folder import read_converted_dir
from .public_names import source_display

# Not uploaded: hidden files and folders, caches and leftovers of interrupted writes.
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".lock", ".tmp")


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
) -> Any:
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
    _, conversion = read_converted_dir(local_dir)
    hint = retry_command(local_dir, repo_id, private=private, revision=revision, create_pr=create_pr)
    saved = f"nothing was lost: {local_dir} is intact; retry the upload alone with `{hint}`"
    _check_repo_id(repo_id)
    token = token or _stored_token()
    if not token:
        raise MonarchConvertError(
            "no Hugging Face token found: set HF_TOKEN to a token with write access or run `hf auth login`; " + saved
        )
    api = _default_api() if api is None else api

    def failed(exc: Exception) -> MonarchConvertError:
        reason = describe_failure(exc, repo_id, revision)
        return MonarchConvertError(scrub(f"upload to {repo_id} failed: {reason}; {saved}", token))

    try:
        full_id = _create_repo(api, repo_id, token=token, private=private, revision=revision)
    except Exception as exc:
        raise failed(exc) from None
    # A pull request's card documents loading the merged model, so it pins no revision.
    operations = _commit_operations(local_dir, full_id, card_revision=None if create_pr else revision)
    message = commit_message or default_commit_message(conversion)
    try:
        return api.create_commit(
            full_id, operations=operations, commit_message=message, token=token,
            repo_type="model", revision=revision, create_pr=create_pr,
        )
    except Exception as exc:
        raise failed(exc) from None


def retry_command(local_dir: str | os.PathLike, repo_id: str, *, private: bool = False,
                  revision: Optional[str] = None, create_pr: bool = False) -> str:
    """The ``monarch-convert upload ...`` command that retries the upload of ``local_dir`` alone."""
    parts = ["monarch-convert", "upload", shlex.quote(str(local_dir)), shlex.quote(repo_id)]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", shlex.quote(revision)]
    if create_pr:
        parts.append("--create-pr")
    return " ".join(parts)


def default_commit_message(conversion: dict) -> str:
    """``<source> converted to MonarchAttention with monarch-convert <version>``, from conversion.json."""
    source = source_display(conversion.get("source_model"))
    what = f"{source} converted" if source else "Checkpoint converted"
    return f"{what} to MonarchAttention with monarch-convert {conversion.get('monarch_convert_version') or __version__}"


def files_to_upload(local_dir: Path) -> list[tuple[str, Path]]:
    """(path in repo, local path) of every regular file, hidden files and folders excluded."""
    files = []
    for root, dirs, names in os.walk(local_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            if not name.startswith(".") and not name.endswith(_SKIP_SUFFIXES) and path.is_file():
                files.append((path.relative_to(local_dir).as_posix(), path))
    return files


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as exc:
        raise MonarchConvertError(f"invalid repository id {repo_id!r}: {brief(exc)}") from None


def _stored_token() -> Optional[str]:
    from huggingface_hub import get_token

    return get_token()


def _default_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(library_name=PROJECT_NAME, library_version=__version__)


def _create_repo(api: Any, repo_id: str, *, token: str, private: bool, revision: Optional[str]) -> str:
    """Create the repo and branch ``revision`` where missing; the repo's full id (with namespace)."""
    repo_url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    full_id = getattr(repo_url, "repo_id", None) or repo_id
    if revision and revision != "main" and not revision.startswith("refs/"):
        api.create_branch(full_id, branch=revision, token=token, repo_type="model", exist_ok=True)
    return full_id


def _commit_operations(local_dir: Path, repo_id: str, *, card_revision: Optional[str]) -> list:
    """Every file of ``local_dir``, plus the generated card unless the folder has its own README.md."""
    from huggingface_hub import CommitOperationAdd

    files = files_to_upload(local_dir)
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in files]
    if not any(rel == "README.md" for rel, _ in files):
        card = build_model_card(local_dir, repo_id, revision=card_revision)
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode("utf-8")))
    return operations
