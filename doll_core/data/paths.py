"""Paths named inside data files stay inside their root.

A CheXpert CSV's ``Path`` column, a label store's manifest and an image id all name
files relative to a folder. A shared file could name ``../../home/user/.ssh/id_rsa``, an
absolute path, or a symlink that leads out of the dataset; such a path is refused with
:class:`~doll_core.data.imageio.ImageReadError`, so readers report it like any other bad
row (skipped with the reason, or a stop with ``on_error="fail"``).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from doll_core.data.imageio import ImageReadError


def contained_path(root: str | Path, relative: str | Path) -> Path:
    """``root / relative``, checked to stay inside ``root``.

    :raises ImageReadError: when ``relative`` is absolute (POSIX or Windows style), has a
        ``..`` part, or resolves (following symlinks) to a place outside ``root``.
    """
    root = Path(root)
    text = str(relative)
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        raise ImageReadError(text, f"absolute path; data files may only name paths inside {root}")
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if ".." in parts:
        raise ImageReadError(text, f"path climbs out of {root} with '..'")
    candidate = root.joinpath(*parts)
    resolved_root = root.resolve()
    resolved = candidate.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise ImageReadError(
            text, f"path leads outside {root} (to {resolved}), through a symbolic link"
        )
    return candidate
