"""Atomic file writes: a temporary file in the same folder, flushed, then renamed over the
target, so that a reader (or a resumed run) sees the old file or the new one, never half.

A process killed mid-write leaves its temporary file (``.NAME.tmp-PID``) behind; a
resumed stage removes such leftovers with :func:`remove_temporaries`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

#: Leftovers of interrupted writes: atomic files (``.NAME.tmp-PID``) and staging folders
#: (``.NAME.partial-PID``, e.g. the phantom writer's).
TEMPORARY_NAME = re.compile(r"^\..+\.(tmp|partial)-\d+$")
#: What to say about such a leftover (``doll doctor``, the label-store check).
LEFTOVER = "temporary file or folder of an interrupted write; safe to delete (--resume removes it)"


def disk_full_error(exc: BaseException) -> OSError | None:
    """The out-of-space ``OSError`` behind ``exc`` (itself, or one it was raised while
    handling or from, as ``torch.save`` does), or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        current = current.__cause__ or current.__context__
    return None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(handle)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except Exception as exc:
        full = disk_full_error(exc)
        if full is not None and full.filename is None:  # a failed write() names no file
            raise OSError(full.errno, full.strerror, str(path)) from exc
        raise
    finally:
        temporary.unlink(missing_ok=True)


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the leftovers of interrupted writes anywhere under ``folder`` (only when no
    other process writes there: a resumed stage's folder); returns what was removed."""
    found = [p for p in Path(folder).rglob(".*") if TEMPORARY_NAME.match(p.name)]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` with an atomic rename."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
