"""No write through a planted link: a run, stage or figure folder that holds a symbolic
link where DoLL writes (``log.txt -> ../notes.txt``, ``figures -> /elsewhere``, a stage
folder linked to another disk) is refused with one line, and nothing outside changes."""

from __future__ import annotations

import os
from pathlib import Path

from doll_core.errors import DollError


def refuse_link(path: str | Path) -> Path:
    """``path``, checked that neither it nor the folder holding it is a symbolic link.

    :raises DollError: naming the link and where it leads.
    """
    path = Path(path)
    for candidate in (path, path.parent):
        if candidate.is_symlink():
            raise DollError(
                f"{candidate} is a symbolic link (to {os.readlink(candidate)}); DoLL never "
                "writes through a link in its folders: remove the link"
            )
    return path


def append_line(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing), never through a link."""
    refuse_link(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(text)
