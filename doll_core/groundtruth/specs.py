"""``KIND:PATH``: which reader reads a ground-truth file.

Kinds: ``chexlocalize`` (either CheXlocalize JSON format, told apart by content),
``nih-bbox`` (NIH's ``BBox_List_2017.csv``) and ``coco`` (COCO JSON). Where a command
names a default kind, a bare ``PATH`` is read as that kind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from doll_core.errors import DollError
from doll_core.groundtruth.chexlocalize import read_chexlocalize
from doll_core.groundtruth.coco import read_coco
from doll_core.groundtruth.nih import read_nih_bbox
from doll_core.groundtruth.truth import GroundTruth

READERS: dict[str, Callable[[Path], GroundTruth]] = {
    "chexlocalize": read_chexlocalize,
    "nih-bbox": read_nih_bbox,
    "coco": read_coco,
}


def parse_spec(spec: str, default_kind: str | None = None) -> tuple[str, Path]:
    """``"KIND:PATH"`` -> ``(KIND, PATH)``; a bare path takes ``default_kind``.

    :raises DollError: for an unknown kind, an empty path, or a bare path without a
        default kind; the message lists the kinds.
    """
    kinds = ", ".join(READERS)
    kind, separator, rest = spec.partition(":")
    if separator and kind in READERS:
        if not rest:
            raise DollError(f"ground truth {spec!r} names no file after '{kind}:'")
        return kind, Path(rest)
    if default_kind is not None and (not separator or Path(spec).exists()):
        return default_kind, Path(spec)
    if separator:
        raise DollError(f"unknown ground-truth kind {kind!r} in {spec!r}; kinds are: {kinds}")
    raise DollError(f"ground truth {spec!r} must be KIND:PATH; kinds are: {kinds}")


def read_ground_truth(spec: str, default_kind: str | None = None) -> GroundTruth:
    """The ground truth ``spec`` (``KIND:PATH``) names."""
    kind, path = parse_spec(spec, default_kind)
    return READERS[kind](path)
