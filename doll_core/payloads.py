"""Reading DoLL's own ``torch.save`` files (checkpoints, states) safely and with checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from doll_core._version import __version__
from doll_core.errors import DollError


def load_payload(path: Path, *, file_format: str, max_version: int, what: str) -> dict[str, Any]:
    """Load ``path`` with ``weights_only=True`` (no code runs) and check that it is a dict
    of ``file_format`` at a version this DoLL reads; every failure names the file."""
    if not path.is_file():
        raise DollError(f"{what} not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise DollError(
            f"{path} is not a readable DoLL checkpoint ({type(exc).__name__}: {first_line})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DollError(f"{path} is not a DoLL {what} (format: {found!r})")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise DollError(
            f"{path} has {what} format version {version!r}; this DoLL ({__version__}) reads "
            f"versions up to {max_version}: upgrade DoLL"
        )
    return payload
