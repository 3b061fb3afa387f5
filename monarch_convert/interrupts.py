"""Ctrl-C and SIGTERM as an exception that says what was interrupted and what state it left.

The command line (``cli._run``) turns SIGINT and SIGTERM into :class:`Interrupted`. It is a
``BaseException`` so that no library's ``except Exception`` swallows it, and not a
``KeyboardInterrupt`` so that click and typer do not turn it into their own silent exit. On its way
out, :func:`during` blocks add what was being done and what was left (the innermost block wins);
``_run`` prints that as one line and exits 128 + the signal number (130, 143), as shells do.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``doing`` and ``outcome`` are filled in by :func:`during`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.doing: Optional[str] = None
        self.outcome: Optional[str] = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        text = f"interrupted ({signal.Signals(self.signum).name})"
        if self.doing:
            text += f" while {self.doing}"
        return f"{text}; {self.outcome}" if self.outcome else text


class _Handler:
    """The signal handler; ``held`` > 0 defers the signal to the end of :func:`held`."""

    def __init__(self) -> None:
        self.held = 0
        self.pending: Optional[int] = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.held:
            self.pending = self.pending or signum
            return
        # A second signal, while the first one's cleanup runs, ends the process at once: a slow
        # cleanup never traps the user, and the next run removes what it left.
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        raise Interrupted(signum)


_HANDLER = _Handler()


@contextmanager
def signals_raise() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise :class:`Interrupted` (in the main thread; Python
    sets signal handlers there only, elsewhere the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _HANDLER) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def held() -> Iterator[None]:
    """Defer SIGINT and SIGTERM to the end of the block (a few renames that must not be split).

    A flag, not ``pthread_sigmask``: Python runs its handlers in the main thread whichever thread
    the signal reached, and torch's threads do not block it. SIGKILL cannot be deferred: the
    output folder's recovery (``output_dir.recover``) handles that."""
    _HANDLER.held += 1
    try:
        yield
    finally:
        _HANDLER.held -= 1
        if not _HANDLER.held and _HANDLER.pending:
            signum, _HANDLER.pending = _HANDLER.pending, None
            _HANDLER(signum, None)


@contextmanager
def during(doing: Optional[str] = None, outcome: Optional[str] = None) -> Iterator[None]:
    """An interruption inside the block happened while ``doing``, and left ``outcome``
    (unless a block inside this one said so already)."""
    try:
        yield
    except Interrupted as exc:
        exc.doing = exc.doing or doing
        exc.outcome = exc.outcome or outcome
        raise
