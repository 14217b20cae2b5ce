"""Where a text file stops being UTF-8: a text reader decodes in blocks of thousands of
bytes, so the line it had reached when it failed is not the line of the bad byte."""

from __future__ import annotations

import gzip
from pathlib import Path


def first_line_not_utf8(path: Path) -> int | None:
    """The number of the first line of ``path`` (gzip-compressed when it ends in ``.gz``)
    that is not UTF-8, or ``None`` (all of it is, or it cannot be read)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError):
        return None
    return None
