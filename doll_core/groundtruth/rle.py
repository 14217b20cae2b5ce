"""COCO run-length encoding (RLE) through pycocotools, as CheXlocalize writes it.

An RLE is ``{"size": [H, W], "counts": ...}``: the mask read in column-major (Fortran)
order as alternating runs of 0s and 1s, starting with 0s. ``counts`` is COCO's compressed
string, or (an "uncompressed" RLE) the list of run lengths. pycocotools' decoder does not
check its input, so every RLE is checked here first: the runs must be non-negative and
sum to ``H * W``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from doll_core.errors import DollError
from doll_core.groundtruth.files import checked_size


def rle_size(rle: object, where: str) -> tuple[int, int]:
    """``(H, W)`` of ``rle``, checked to be an object with a ``size`` of two integers >= 1
    and a ``counts`` string or list; ``where`` names it in the error."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise DollError(f"{where}: not an RLE (an object with 'size' and 'counts')")
    size = rle["size"]
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise DollError(f"{where}: RLE 'size' must be [H, W] (integers >= 1), got {size!r}")
    if not isinstance(rle["counts"], str | list):
        raise DollError(f"{where}: RLE 'counts' must be a string or a list of integers")
    return checked_size(int(size[0]), int(size[1]), where)


def string_counts(counts: str, where: str) -> list[int]:
    """The run lengths of COCO's compressed ``counts`` string (its LEB128-like code: 5 bits
    a character from ``'0'``, a continuation bit, a sign bit, runs after the second as
    differences from the run two before)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise DollError(f"{where}: RLE 'counts' ends inside a number")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise DollError(f"{where}: RLE 'counts' holds {counts[position]!r}")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _checked(rle: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``rle`` as a compressed RLE pycocotools can decode safely."""
    height, width = rle_size(rle, where)
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise DollError(f"{where}: RLE 'counts' list must hold integers")
        runs = list(counts)
    else:
        runs = string_counts(counts, where)
    if any(v < 0 for v in runs) or sum(runs) != height * width:
        raise DollError(
            f"{where}: RLE runs sum to {sum(runs)} (or are negative), "
            f"its size {height}x{width} needs {height * width}"
        )
    if isinstance(counts, list):
        return dict(coco_mask.frPyObjects({"size": [height, width], "counts": runs}, height, width))
    return {"size": [height, width], "counts": counts.encode("ascii")}


def decode_rle(rle: Mapping[str, Any], where: str) -> np.ndarray:
    """bool ``[H, W]`` of a checked RLE (``pycocotools.mask.decode``)."""
    return np.asarray(coco_mask.decode(_checked(rle, where)), dtype=bool)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """bool ``[H, W]`` -> ``{"size": [H, W], "counts": str}`` exactly as CheXlocalize's
    ``encode_segmentation`` writes it (``mask.encode`` of the Fortran-ordered uint8 mask,
    ``counts`` decoded to ``str``)."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def decode_polygons(polygons: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]``: the union of COCO polygons (each ``[x1, y1, x2, y2, ...]``),
    rasterised as pycocotools' ``annToMask`` does (``frPyObjects``, ``merge``)."""
    height, width = size
    merged = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    return np.asarray(coco_mask.decode(merged), dtype=bool)
