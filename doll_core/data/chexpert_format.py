"""The CheXpert CSV format, shared by the phantom (which writes it) and the reader."""

from __future__ import annotations

import re
from decimal import Decimal

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


#: What a label cell may hold, around its value: ASCII digits in plain decimal notation.
#: ``float()`` alone would take ``0_1`` or non-ASCII digits (Arabic-Indic, fullwidth).
_LABEL_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


#: The cells as CheXpert writes them, looked up before any parsing (a 223k-row CSV holds
#: 3 million of them).
_AS_WRITTEN = {"1.0": POSITIVE, "0.0": NEGATIVE, "-1.0": UNCERTAIN, "": BLANK}


def parse_label(cell: str) -> int:
    """A CSV cell -> label code; raises ValueError for anything but 1, 0, -1 or blank.

    Blank means empty or whitespace only. A value is a plain ASCII decimal number whose
    value is exactly 1, 0 or -1 (``1``, ``1.0``, ``-1.00``, ``+0``); anything else, such as
    ``1.0000000000000001``, ``nan``, ``0_1`` or non-ASCII digits, is an error.
    """
    known = _AS_WRITTEN.get(cell)
    if known is not None:  # the cells of a real CheXpert CSV: no regex, no Decimal
        return known
    text = cell.strip()
    if not text:
        return BLANK
    if _LABEL_NUMBER.fullmatch(text):
        value = Decimal(text)
        if value == 1:
            return POSITIVE
        if value == 0:
            return NEGATIVE
        if value == -1:
            return UNCERTAIN
    raise ValueError(f"label {cell!r} is none of 1.0, 0.0, -1.0 or blank")


def format_label(code: int) -> str:
    """Label code -> CSV cell, as CheXpert writes it."""
    return {POSITIVE: "1.0", NEGATIVE: "0.0", UNCERTAIN: "-1.0", BLANK: ""}[code]
