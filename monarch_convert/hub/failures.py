"""Why an upload failed, in one line the user can act on, with any token scrubbed from it.

huggingface_hub wraps the failure (an HTTP error around a network error, a card validation error
around an HTTP error, ...), so the whole chain of causes is searched for the one that explains it.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Optional

_NETWORK_ERRORS = {"TransportError", "NetworkError", "TimeoutException", "ConnectError", "ConnectionError", "Timeout"}


def brief(text: Any, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub(text: str, token: Optional[str]) -> str:
    """``text`` on one line with ``token``, and anything that looks like a token, masked."""
    if token:
        text = text.replace(token, "***")
    text = re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
    return " ".join(text.split())


def describe_failure(exc: BaseException, repo_id: str, revision: Optional[str]) -> str:
    """One-line reason for a failed upload (without the retry hint)."""
    from huggingface_hub import errors as hf_errors

    causes = list(_causes(exc))
    card_rejected = any(str(err).startswith("Invalid metadata in README.md") for err in causes)
    for err in causes:
        if isinstance(err, hf_errors.HfHubHTTPError):
            if card_rejected:
                return f"the Hub rejected the model card's metadata: {_server_message(err)}"
            return _describe_http_error(err, repo_id, revision)
        if isinstance(err, hf_errors.OfflineModeIsEnabled):
            return (
                "HF_HUB_OFFLINE is set, so the Hub cannot be reached: "
                "unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to upload"
            )
        if isinstance(err, hf_errors.HFValidationError):
            return f"invalid repository id {repo_id!r}: {brief(err)}"
        if _is_network_error(err):
            return f"network error while talking to the Hub ({type(err).__name__}: {brief(err) or type(err).__name__})"
    return f"the upload failed ({type(exc).__name__}: {brief(exc)})"


def _describe_http_error(err: Any, repo_id: str, revision: Optional[str]) -> str:
    from huggingface_hub import errors as hf_errors

    status = getattr(getattr(err, "response", None), "status_code", None)
    server = _server_message(err)
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


def _server_message(err: Any) -> str:
    return brief(getattr(err, "server_message", None) or str(err).splitlines()[0])


def _causes(exc: Optional[BaseException]) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_network_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & _NETWORK_ERRORS) or isinstance(exc, (ConnectionError, TimeoutError))
