"""The CheXpert CSV format, shared by the phantom (which writes it) and the reader."""

from __future__ import annotations

from doll_core.observations import OBSERVATIONS

#: CheXpert's ``train.csv`` / ``valid.csv`` header, column for column.
CHEXPERT_HEADER: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)
#: The first component of ``Path`` values in the two CheXpert releases.
CHEXPERT_PREFIXES: tuple[str, ...] = ("CheXpert-v1.0-small", "CheXpert-v1.0")

#: Label codes as stored per cell: 1.0 positive, 0.0 negative, -1.0 uncertain, blank.
POSITIVE, NEGATIVE, UNCERTAIN, BLANK = 1, 0, -1, -2
CODE_NAMES: dict[int, str] = {
    POSITIVE: "positive",
    NEGATIVE: "negative",
    UNCERTAIN: "uncertain",
    BLANK: "blank",
}


def parse_label(cell: str) -> int:
    """A CSV cell -> label code; raises ValueError for anything but 1, 0, -1 or blank."""
    text = cell.strip()
    if not text:
        return BLANK
    value = float(text)
    if value == 1.0:
        return POSITIVE
    if value == 0.0:
        return NEGATIVE
    if value == -1.0:
        return UNCERTAIN
    raise ValueError(f"label {cell!r} is none of 1.0, 0.0, -1.0 or blank")


def format_label(code: int) -> str:
    """Label code -> CSV cell, as CheXpert writes it."""
    return {POSITIVE: "1.0", NEGATIVE: "0.0", UNCERTAIN: "-1.0", BLANK: ""}[code]
