"""Where DIR cannot be written, ``monarch-convert`` ends in one line, ``error: cannot write DIR:
<reason>``, exit 2: before loading anything, or (a full disk) with the staging folder removed and an
existing DIR intact. A new DIR follows the umask, an existing one keeps its mode, and a symbolic
link is written through. Real conditions: read-only bind mounts and small tmpfs in a private mount
namespace (skipped where mounting is refused), another user for "no permission"."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_cli_helpers import COMMAND, cli_env, listing, one_line_error, run, run_in_mount_namespace, save_tiny_bert

from monarch_convert.output_dir import recover

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


def failed_before_loading(result: subprocess.CompletedProcess) -> str:
    assert "Loading" not in result.stdout, result.stdout
    return one_line_error(result)


def test_read_only_file_system(tiny_bert, tmp_path):
    area = tmp_path / "area"
    (area / "out").mkdir(parents=True)
    (area / "out" / "keep.txt").write_text("precious")
    q = shlex.quote(str(area))
    result = run_in_mount_namespace(f"mount --bind {q} {q}; mount -o remount,bind,ro {q}",
                                    [tiny_bert, "--out", area / "out", "--overwrite"])
    assert failed_before_loading(result) == f"error: cannot write {area / 'out'}: Read-only file system"
    assert listing(area) == {"out/keep.txt": "precious"}


def test_disk_full_during_the_save(tiny_bert, tmp_path):
    small = tmp_path / "small"  # a 64 kB tmpfs: the 98 kB weights do not fit
    small.mkdir()
    q = shlex.quote(str(small))
    result = run_in_mount_namespace(
        f"mount -t tmpfs -o size=64k tmpfs {q}; mkdir {q}/out; echo precious > {q}/out/keep.txt",
        [tiny_bert, "--out", small / "out", "--overwrite"],
        after=f"echo LEFT; ls -A {q}; cat {q}/out/keep.txt",
    )
    line = one_line_error(result)
    assert line.startswith(f"error: cannot write {small / 'out'}: ") and "No space left on device" in line
    assert "Saving" in result.stdout
    assert result.stdout.split("LEFT\n")[1] == "out\nprecious\n"  # staging removed, DIR intact


def test_empty_mount_point_as_dir(tiny_bert, tmp_path):
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    result = run_in_mount_namespace(f"mount -t tmpfs tmpfs {shlex.quote(str(mount_point))}",
                                    [tiny_bert, "--out", mount_point])
    expected = f"error: cannot write {mount_point}: it is a mount point (give a folder inside it)"
    assert failed_before_loading(result) == expected


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_places_that_cannot_hold_a_folder(tiny_bert, tmp_path, where):
    if where == "under a file":
        (tmp_path / "file").write_text("")
        out, reason = tmp_path / "file" / "out", f"{tmp_path / 'file'} is not a folder"
    else:
        out, reason = Path("/proc/monarch-convert-test/out"), "No such file or directory"
    assert failed_before_loading(run([tiny_bert, "--out", out])) == f"error: cannot write {out}: {reason}"


def test_no_permission(tiny_bert):
    area = Path(tempfile.mkdtemp(prefix="monarch-convert-test-", dir="/tmp"))
    try:
        if os.geteuid() == 0:
            # chmod does not stop root: run the command as nobody instead, on a folder it may only read.
            area.chmod(0o755)
            tiny_bert = shutil.copytree(tiny_bert, area / "model")  # pytest's own tmp folders are 0700
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
            if probe.returncode != 0:
                pytest.skip(f"running as root, and setpriv cannot drop privileges: {probe.stderr.strip()}")
            # nobody must be able to run the package and read the model (a checkout in a 0700
            # folder, as mktemp -d makes, is out of its reach).
            readable = f"import monarch_convert.cli; open({str(Path(tiny_bert) / 'config.json')!r}).close()"
            probe = subprocess.run([*prefix, sys.executable, "-c", readable], capture_output=True, text=True,
                                   env=cli_env(), cwd="/")
            if probe.returncode != 0:
                pytest.skip("running as root, and the unprivileged user cannot read this checkout or the test "
                            f"model: {probe.stderr.strip().splitlines()[-1]}")
        else:
            area.chmod(0o555)
            prefix = []
        argv = [*prefix, *COMMAND, str(tiny_bert), "--out", str(area / "out")]
        result = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=300, cwd="/")
        assert failed_before_loading(result) == f"error: cannot write {area / 'out'}: Permission denied"
        assert [p.name for p in area.iterdir()] == (["model"] if os.geteuid() == 0 else [])  # nothing written
    finally:
        area.chmod(0o755)
        shutil.rmtree(area)


def test_a_new_dir_follows_the_umask_and_an_existing_one_keeps_its_mode(tiny_bert, tmp_path):
    out = tmp_path / "out"
    result = run([tiny_bert, "--out", out], preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    out.chmod(0o711)
    result = run([tiny_bert, "--out", out, "--overwrite"])
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o711


def test_a_symbolic_link_is_written_through(tiny_bert, tmp_path):
    target = tmp_path / "checkpoints" / "v1"
    target.mkdir(parents=True)
    (target / "previous.txt").write_text("the previous checkpoint")
    link = tmp_path / "latest"
    link.symlink_to(target)
    result = run([tiny_bert, "--out", link, "--overwrite"])
    assert result.returncode == 0, result.stderr
    assert f"{link} is a symbolic link: writing into its target, {target}" in result.stdout
    assert link.is_symlink() and link.resolve() == target
    files = listing(target)
    assert "conversion.json" in files and "previous.txt" not in files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "latest"]
    assert [p.name for p in target.parent.iterdir()] == ["v1"]


def test_recovery_leaves_a_running_process_folders_alone(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        running = tmp_path / f".out.partial-{sleeper.pid}-0123abcd"
        gone = tmp_path / ".out.partial-99999999-0123abcd"  # above any pid_max: no such process
        other = tmp_path / ".other.partial-99999999-0123abcd"  # another DIR's
        for folder in (running, gone, other):
            folder.mkdir()
        note = recover(tmp_path / "out")
        assert note is not None and note.startswith("removed 1 staging folder(s) left by an interrupted run")
        assert running.exists() and not gone.exists() and other.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
