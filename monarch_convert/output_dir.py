"""The output folder DIR of ``monarch-convert MODEL --out DIR``: checked before any heavy work,
written beside itself, swapped in at the end, and repaired by the next run after a kill.

Beside DIR (in its parent, so that every move is one atomic rename), each name carrying the pid of
the process that made it::

    .DIR.partial-PID-XXXXXXXX   being written
    .DIR.new-PID-XXXXXXXX       complete, about to become DIR
    .DIR.old-PID-XXXXXXXX       the previous DIR, moved aside

The swap (:func:`_swap`) renames partial -> new, DIR -> old, new -> DIR, then removes old; Ctrl-C
and SIGTERM wait until it is done. After a SIGKILL (or a power cut) anywhere, the names say where it
stopped, and the next run into DIR (:func:`recover`) finishes it (DIR missing, a complete new one:
moved in) or undoes it (DIR missing, only the old one: moved back), and removes every other staging
folder of a process that is gone. A live process's folders (a concurrent run) are left alone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

from .errors import MonarchConvertError
from .interrupts import during, held
from .stop_points import stop_point

_SUFFIX = re.compile(r"(partial|new|old)-(\d+)-[0-9a-f]{8}")


class Leftover(NamedTuple):
    kind: str  # partial, new or old
    path: Path


@contextmanager
def staged_output(out: Path | str, overwrite: bool = False, echo: Callable[[str], Any] = print) -> Iterator[Path]:
    """A folder to write DIR's contents to; it replaces DIR (``out``) when the block succeeds.

    Before the block: an interrupted earlier swap into DIR is finished or undone, DIR is checked,
    and the folder is created with a probe file in it, so that a DIR that cannot be written fails
    in one line before anything is loaded. A symbolic link DIR is written through: its target is
    replaced, and the link kept. An existing DIR keeps its mode; a new one follows the umask.
    Raises :class:`MonarchConvertError` for any failure to write; a failure or an interruption
    leaves DIR as it was, and removes the folder (and the parents this call created)."""
    out = Path(out)
    target = Path(os.path.realpath(out)) if out.is_symlink() else Path(os.path.abspath(out))
    if out.is_symlink():
        echo(f"{out} is a symbolic link: writing into its target, {target}")
    with write_errors(out):
        note = recover(target)
        if note:
            echo(f"{out}: {note}")
        _check(out, target, overwrite)
    staging, created, done = _sibling(target, "partial"), [], False
    try:
        with write_errors(out):
            _make_parents(out, target, created)
            _make_probed(staging)
        with during(outcome=f"{out} was left as it was"):
            yield staging
        with during(outcome=f"{out} is complete"), held(), write_errors(out):
            _swap(staging, target)
            done = True
    finally:
        if not done:
            shutil.rmtree(staging, ignore_errors=True)
            for folder in reversed(created):
                _remove_empty(folder)


@contextmanager
def write_errors(out: Path) -> Iterator[None]:
    """A failure to write inside the block (an ``OSError``: no permission, a read-only file
    system, a full disk; or safetensors' own error for those) as one line naming DIR."""
    try:
        yield
    except OSError as e:
        raise MonarchConvertError(f"cannot write {out}: {e.strerror or e}") from e
    except Exception as e:
        from safetensors import SafetensorError

        if not isinstance(e, SafetensorError):
            raise
        raise MonarchConvertError(f"cannot write {out}: {e}") from e


def recover(target: Path) -> Optional[str]:
    """Finish or undo a swap into ``target`` that a kill interrupted, and remove the staging
    folders of processes that are gone; what was done, in one sentence, or None."""
    stale = leftovers(target)
    done = []
    if stale and not target.exists():
        pick = _newest(stale, "new") or _newest(stale, "old")
        if pick is not None:
            pick.path.rename(target)
            stale.remove(pick)
            done.append(
                "finished an interrupted swap (the new checkpoint is in place)"
                if pick.kind == "new"
                else "undid an interrupted swap (the previous folder is back)"
            )
    if stale:
        size = sum(_size(leftover.path) for leftover in stale)
        for leftover in stale:
            shutil.rmtree(leftover.path, ignore_errors=True)
        done.append(f"removed {len(stale)} staging folder(s) left by an interrupted run ({size / 1e6:.1f} MB)")
    return "; ".join(done) or None


def leftovers(target: Path) -> list[Leftover]:
    """The staging folders of ``target`` whose process is gone."""
    prefix = f".{target.name}."
    try:
        entries = list(target.parent.iterdir())
    except OSError:  # no parent yet: nothing to recover
        return []
    found = []
    for entry in entries:
        match = _SUFFIX.fullmatch(entry.name[len(prefix) :]) if entry.name.startswith(prefix) else None
        if match and entry.is_dir() and not entry.is_symlink() and not _alive(int(match[2])):
            found.append(Leftover(match[1], entry))
    return found


def _check(out: Path, target: Path, overwrite: bool) -> None:
    if target.parent == target:
        raise MonarchConvertError(f"--out {out} is the root folder: give a folder to write to")
    if target.exists() and not target.is_dir():
        raise MonarchConvertError(f"--out {out} exists and is not a folder")
    if not target.is_dir():
        return
    if os.path.ismount(target):
        # It cannot be renamed (EBUSY), so it cannot be replaced atomically.
        raise MonarchConvertError(f"cannot write {out}: it is a mount point (give a folder inside it)")
    if not overwrite and any(target.iterdir()):
        raise MonarchConvertError(f"--out {out} is not empty (pass --overwrite to replace it)")


def _make_parents(out: Path, target: Path, created: list[Path]) -> None:
    """Create DIR's missing parent folders, outermost first, appending each to ``created``."""
    missing = []
    parent = target.parent
    while not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise MonarchConvertError(f"cannot write {out}: {parent} is not a folder")
    for folder in reversed(missing):
        folder.mkdir()
        created.append(folder)


def _make_probed(folder: Path) -> None:
    # os.mkdir applies the umask (tempfile.mkdtemp would make it 0700); the probe file shows that
    # files can be created in it, before anything is loaded.
    os.mkdir(folder, 0o777)
    probe = folder / ".write-probe"
    probe.write_bytes(b"")
    probe.unlink()


def _swap(staging: Path, target: Path) -> None:
    """partial -> new, DIR -> old, new -> DIR, remove old (module docstring); any failure puts
    DIR back as it was and removes the new folder."""
    if target.is_dir():
        os.chmod(staging, stat.S_IMODE(target.stat().st_mode))  # an existing DIR keeps its mode
    new = staging.rename(_sibling(target, "new"))
    try:
        stop_point("swap:new")
        old = target.rename(_sibling(target, "old")) if target.exists() else None
        stop_point("swap:old")
        try:
            new.rename(target)
        except OSError:
            if old is not None:
                old.rename(target)
            raise
    except OSError:
        shutil.rmtree(new, ignore_errors=True)
        raise
    stop_point("swap:done")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _newest(leftovers: list[Leftover], kind: str) -> Optional[Leftover]:
    of_kind = [leftover for leftover in leftovers if leftover.kind == kind]
    return max(of_kind, key=lambda leftover: leftover.path.stat().st_mtime, default=None)


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: something else was put there meanwhile
        pass
