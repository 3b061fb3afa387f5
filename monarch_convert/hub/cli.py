"""``monarch-convert upload DIR REPO_ID``, and the progress lines it shares with
``monarch-convert MODEL --out DIR --push-to-hub REPO_ID``.

Only typer and the standard library at module level, so that ``--help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..interrupts import during
from .card import HUB_URL
from .folder import read_converted_dir
from .upload import files_to_upload, push_to_hub


def push_converted_dir(
    local_dir: str | os.PathLike, repo_id: str, *, echo: Optional[Callable[[str], Any]] = None, **options: Any
) -> Any:
    """:func:`~.upload.push_to_hub` (``options`` are its keyword arguments) with progress lines,
    for the CLI (``--push-to-hub`` and ``upload``)."""
    echo = echo or typer.echo
    local_dir = Path(local_dir)
    read_converted_dir(local_dir)  # a one-line error before the progress line, not after
    files = files_to_upload(local_dir)
    size = sum(path.stat().st_size for _, path in files)
    where = f" (branch {options['revision']})" if options.get("revision") else ""
    how = "opening a pull request on" if options.get("create_pr") else "pushing to"
    echo(f"Uploading {len(files)} files ({size / 1e6:.1f} MB) from {local_dir}, {how} {HUB_URL}/{repo_id}{where} ...")
    # A Hub commit is all or nothing, and the folder is only read.
    with during(f"uploading {local_dir} to {repo_id}", f"{local_dir} was left as it was"):
        info = push_to_hub(local_dir, repo_id, **options)
    pr_url = getattr(info, "pr_url", None)
    echo(f"Opened pull request: {pr_url}" if pr_url else f"Uploaded: {getattr(info, 'commit_url', None) or info}")
    return info


def upload_command(
    local_dir: Path = typer.Argument(
        ..., help="Converted checkpoint folder (written by `monarch-convert MODEL --out DIR`)."
    ),
    repo_id: str = typer.Argument(..., help="Hub model repo id, e.g. your-name/bert-base-monarch; created if missing."),
    private: bool = typer.Option(False, "--private", help="Create the repo private (no effect on an existing repo)."),
    revision: Optional[str] = typer.Option(
        None, "--revision", help="Branch to push to (created if missing); default main."
    ),
    create_pr: bool = typer.Option(False, "--create-pr", help="Open a pull request instead of pushing directly."),
    commit_message: Optional[str] = typer.Option(
        None, "--commit-message", help="Commit message (default: describes the conversion)."
    ),
) -> None:
    """Upload a converted checkpoint folder to the Hugging Face Hub, with a generated model card.

    Auth: HF_TOKEN, or the login cache of `hf auth login`.
    """
    push_converted_dir(
        local_dir, repo_id, private=private, revision=revision, create_pr=create_pr, commit_message=commit_message
    )
