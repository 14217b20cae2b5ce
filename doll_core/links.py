"""No write through a planted link: a run, stage, label-store or export folder that holds
a symbolic link leading outside it (``log.txt -> ../notes.txt``, ``figures -> /elsewhere``,
a stage folder linked to another disk) is refused with one line, and nothing outside
changes.

The folder a user names (``--out``) may itself be a link, say to a scratch disk: what
is refused is a link *inside* it whose target lies outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from doll_core.errors import DollError


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _leads_outside(link: Path, root: Path | None) -> bool:
    """Whether the symbolic link ``link`` leads outside ``root`` (always, without one)."""
    return root is None or not _real(link).is_relative_to(_real(root))


def _refusal(link: Path, what: str = "") -> DollError:
    inside = f" in {what}" if what else ""
    return DollError(
        f"{link} is a symbolic link (to {os.readlink(link)}){inside}; DoLL never writes "
        "through a link leading outside its folders: remove the link"
    )


def refuse_link(path: str | Path, within: str | Path | None = None) -> Path:
    """``path``, checked that it is not a symbolic link and, given ``within`` (a folder
    above it), that no folder between ``within`` and it is a link leading outside
    ``within``. ``within`` itself may be a link.

    :raises DollError: naming the link and where it leads.
    """
    path = Path(path)
    candidates = [path]
    if within is not None:
        root = Path(within)
        relative = path.relative_to(root)  # ValueError: a caller's bug, not a user's
        current = root
        for part in relative.parts[:-1]:
            current = current / part
            candidates.append(current)
    else:
        root = None
    for candidate in candidates:
        if candidate.is_symlink() and (candidate is path or _leads_outside(candidate, root)):
            raise _refusal(candidate)
    return path


def links_leaving(folder: str | Path) -> list[Path]:
    """The symbolic links under ``folder`` (not ``folder`` itself) whose target, dangling
    or not, lies outside it; linked folders are listed, never entered."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for top, folders, files in os.walk(folder):
        for name in folders + files:
            candidate = Path(top) / name
            if candidate.is_symlink() and _leads_outside(candidate, folder):
                found.append(candidate)
    return sorted(found)


def refuse_links_leaving(folder: str | Path, what: str) -> None:
    """Refuse ``folder`` (described as ``what``, e.g. ``"run folder"``) when it holds a
    symbolic link leading outside it, before anything is written there.

    :raises DollError: naming the first such link, where it leads, and how many there are.
    """
    found = links_leaving(folder)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise _refusal(found[0], f"{what} {folder}{more}")


def append_line(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing), never through a link."""
    refuse_link(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if path.is_symlink():  # planted between the check and the open
            raise _refusal(path) from None
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(text)
