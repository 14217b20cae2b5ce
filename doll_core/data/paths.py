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
        ``..`` part or a NUL character, or resolves (following symlinks) to a place outside
        ``root``.
    """
    root = Path(root)
    text = str(relative)
    if "\x00" in text:
        raise ImageReadError(text.replace("\x00", "\\x00"), "path holds a NUL character")
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        raise ImageReadError(text, f"absolute path; data files may only name paths inside {root}")
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if ".." in parts:
        raise ImageReadError(text, f"path climbs out of {root} with '..'")
    return resolves_inside(root, root.joinpath(*parts), text)


def resolves_inside(root: Path, candidate: Path, shown: str | Path) -> Path:
    """``candidate`` (a path under ``root``) if, with symbolic links followed, it still lies
    inside ``root``; readers that list folders check each listed file with this.

    :raises ImageReadError: naming ``shown`` when it leads outside ``root`` or cannot be
        resolved (a symbolic link loop).
    """
    try:
        resolved_root = root.resolve()
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop
        raise ImageReadError(shown, f"cannot resolve the path ({exc})") from None
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise ImageReadError(
            shown, f"path leads outside {root} (to {resolved}), through a symbolic link"
        )
    return candidate
