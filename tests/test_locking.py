"""The run-folder lock: one live process per folder, released by the OS however the
holder ends, reentrant within a process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from doll_core.errors import DollError
from doll_core.locking import LOCK_FILE, folder_lock

HOLD = """
import sys, time
from doll_core.locking import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_in_child(folder: Path) -> subprocess.Popen[str]:
    """A child process that holds ``folder``'s lock until it is killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_a_second_process_is_refused_naming_the_holder_until_it_dies(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    child = hold_in_child(folder)
    try:
        with pytest.raises(DollError) as caught, folder_lock(folder):
            pass
        message = str(caught.value)
        assert f"process {child.pid} on host {socket.gethostname()}" in message
        assert str(folder) in message and "in use" in message
        holder = json.loads((folder / LOCK_FILE).read_text())
        assert holder["pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with folder_lock(folder):  # the OS released the dead holder's lock; the file stays
        assert json.loads((folder / LOCK_FILE).read_text())["host"] == socket.gethostname()


def test_one_process_may_take_its_own_folder_again(tmp_path: Path) -> None:
    with folder_lock(tmp_path), folder_lock(tmp_path / "."):
        child = subprocess.run(
            [sys.executable, "-c", HOLD, str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert child.returncode != 0 and "is in use by process" in child.stderr
    with folder_lock(tmp_path):  # released after the outer block
        pass


def test_a_planted_lock_link_is_refused_and_its_target_never_written(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).symlink_to(notes)
    with pytest.raises(DollError, match="is a symbolic link"), folder_lock(run):
        pass
    assert notes.read_text() == "my notes\n"
    (run / LOCK_FILE).unlink()
    (run / LOCK_FILE).symlink_to(tmp_path / "missing")  # a dangling link is not created either
    with pytest.raises(DollError, match="is a symbolic link"), folder_lock(run):
        pass
    assert not (tmp_path / "missing").exists()
