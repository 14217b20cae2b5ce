"""One process at a time per run folder: an exclusive ``flock`` on ``FOLDER/.doll.lock``.

The lock is held for as long as the process works in the folder and the operating system
releases it when the process ends, however it ends (``kill -9`` included), so a stale lock
file never blocks anyone: only a live holder does. The file records who holds it (process
id, host, start time, command), which is what a refused process is told. A process may
take the same folder again (an ablation holds its stage folder while each grid point's
run takes it too); under ``torchrun`` only rank 0 takes locks.

What the lock is worth depends on the file system: on a local disk it is exact; on NFS,
Linux implements ``flock`` with the server's POSIX locks, so it holds across machines
where the server supports locking (NFSv4, or NFSv3 with lockd); where a file system does
not support locks, DoLL warns once and works unlocked.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from doll_core.errors import DollError
from doll_core.links import refuse_links_leaving
from doll_core.training.distributed import launched_rank

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The lock file in each locked folder.
LOCK_FILE = ".doll.lock"

#: folder (resolved) -> (file descriptor, how many times this process holds it)
_held: dict[str, tuple[int, int]] = {}


def _holder(fd: int) -> dict[str, Any]:
    """What the lock file says of its holder (empty when unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 65536).decode("utf-8", errors="replace")
        found = json.loads(text)
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (its lock file names no holder)"
    text = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("started"):
        text += f", since {holder['started']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


@contextmanager
def folder_lock(folder: str | Path, what: str = "run folder") -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the ``with`` block.

    Once held, the folder is checked for symbolic links leading outside it (a planted
    ``log.txt -> ../notes.txt``, a linked stage folder): nothing is written through one.

    :raises DollError: when another live process holds it, naming its process id and host;
        when it holds a link leading outside it.
    """
    if launched_rank() != 0 or fcntl is None:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    path = folder / LOCK_FILE
    try:  # never through a link: a planted .doll.lock -> ../notes.txt would be truncated
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if not path.is_symlink():
            raise
        raise DollError(
            f"{path} is a symbolic link ({exc.strerror}); DoLL keeps its lock as a plain file "
            "in the folder and never writes through a link: remove the link"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DollError(f"{path} is not a plain file; remove it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DollError(
            f"{what} {folder} is in use by {_describe(holder)}: two processes writing one "
            "folder would mix their results. Wait for it to finish (or stop it), then run "
            "again."
        ) from None
    except OSError as exc:  # a file system without locks (ENOLCK, EOPNOTSUPP)
        os.close(fd)
        warnings.warn(
            f"cannot lock {path} ({exc.strerror}); this file system does not support "
            "locks, so nothing stops a second process from writing the same folder",
            RuntimeWarning,
            stacklevel=3,
        )
        refuse_links_leaving(folder, what)
        yield
        return
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["doll", *sys.argv[1:]])[:500],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _held[key] = (fd, 1)
    try:
        refuse_links_leaving(folder, what)
        yield
    finally:
        fd, _ = _held.pop(key)
        os.close(fd)  # releases the lock
