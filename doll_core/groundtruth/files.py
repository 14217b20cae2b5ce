"""Opening ground-truth files: one error message per way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from doll_core.errors import DollError


def existing_file(path: Path) -> Path:
    """``path`` if it is a file. :raises DollError: naming it otherwise."""
    if not path.is_file():
        raise DollError(f"ground truth file not found: {path}")
    return path


def load_json(path: Path) -> Any:
    """The JSON value in ``path``. :raises DollError: when it is missing or not JSON."""
    try:
        return json.loads(existing_file(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DollError(f"{path} is not JSON ({first})") from None
    except OSError as exc:
        raise DollError(f"cannot read {path}: {exc.strerror or exc}") from None


def json_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object. :raises DollError: naming ``where`` otherwise."""
    if not isinstance(value, dict):
        raise DollError(f"{where}: expected an object, got {type(value).__name__}")
    return value
