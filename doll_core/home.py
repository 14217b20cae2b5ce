"""Paths a user writes: ``~`` and ``~user`` expanded, or one clear error."""

from __future__ import annotations

from pathlib import Path

from doll_core.errors import DollError


def expand_home(path: str | Path, what: str = "path") -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded.

    :raises DollError: naming ``what`` when ``~user`` names no user here (pathlib raises a
        bare ``RuntimeError``).
    """
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise DollError(f"{what}: cannot expand {str(path)!r}: no such user's home") from None
