"""Boxes ``[x, y, w, h]`` (float pixels, origin at the top-left corner of the image) as
masks, by one rule: a pixel belongs to the box when its centre does.

Pixel ``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``; its centre
``(c + 0.5, r + 0.5)`` lies in the box when ``x <= c + 0.5 < x + w`` and
``y <= r + 0.5 < y + h``. So the box covers columns ``ceil(x - 0.5)`` up to (not
including) ``ceil(x + w - 0.5)``, likewise rows, clipped to the image: each edge rounded
to the nearest pixel border, halves up. A box narrower than a pixel may cover none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def box_bounds(box: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)``, ends exclusive, of ``box`` ``[x, y, w, h]`` in an
    image of ``size`` ``(H, W)``."""
    x, y, w, h = (float(v) for v in box)
    height, width = size

    def span(start: float, length: float, limit: int) -> tuple[int, int]:
        # clamped as floats first: a box of 1e308 (whose end overflows to inf) is the edge
        first = math.ceil(min(max(start - 0.5, 0.0), float(limit)))
        last = math.ceil(min(max(start + length - 0.5, float(first)), float(limit)))
        return first, last

    row0, row1 = span(y, h, height)
    col0, col1 = span(x, w, width)
    return row0, row1, col0, col1


def box_mask(box: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]``: the pixels of ``box`` ``[x, y, w, h]`` (see the module docstring)."""
    row0, row1, col0, col1 = box_bounds(box, size)
    mask = np.zeros(size, dtype=bool)
    mask[row0:row1, col0:col1] = True
    return mask
