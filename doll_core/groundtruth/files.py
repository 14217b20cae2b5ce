"""Opening ground-truth files: one error message per way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from doll_core.data.imageio import MAX_IMAGE_PIXELS
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
    except RecursionError:
        raise DollError(
            f"{path} nests its JSON too deeply to read (no ground-truth format nests more "
            "than a few levels): damaged, or not a ground-truth file"
        ) from None
    except OSError as exc:
        raise DollError(f"cannot read {path}: {exc.strerror or exc}") from None


def json_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object. :raises DollError: naming ``where`` otherwise."""
    if not isinstance(value, dict):
        raise DollError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def checked_size(height: int, width: int, where: str) -> tuple[int, int]:
    """``(height, width)`` of a mask a file declares, refused above the pixel limit of
    images (a declared size is allocated when the mask is decoded).

    :raises DollError: naming ``where``, the size and the limit.
    """
    if height * width > MAX_IMAGE_PIXELS:
        raise DollError(
            f"{where}: a mask of {height} x {width} = {height * width:,} pixels is over the "
            f"limit of {MAX_IMAGE_PIXELS:,} that images have: the file is damaged, or not "
            "of these images"
        )
    return height, width
