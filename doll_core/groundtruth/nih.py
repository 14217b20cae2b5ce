"""NIH ChestX-ray14's ``BBox_List_2017.csv``: radiologists' boxes on 1024² images.

The file's header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (the box's four
numbers under one heading that its commas split, and empty columns after it); each row is
an image file name, a finding and ``x, y, w, h`` in pixels of the 1024 x 1024 images NIH
distributes. Empty trailing columns are allowed on every row. A box becomes a mask by
:mod:`doll_core.groundtruth.boxes`' rule; findings map to observations by
:mod:`doll_core.groundtruth.names` (``Effusion`` -> ``Pleural Effusion``, ``Infiltrate``
-> ``Lung Opacity``, ``Mass`` and ``Nodule`` -> ``Lung Lesion``, ...). The file covers
the findings it names; the image id is the ``Image Index`` (a file name).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from doll_core.errors import DollError
from doll_core.groundtruth.boxes import box_mask
from doll_core.groundtruth.files import existing_file
from doll_core.groundtruth.names import observation_name
from doll_core.groundtruth.truth import GroundTruth, ImageTruth, MaskPart

#: The pixel grid of NIH ChestX-ray14's images, ``(H, W)``.
NIH_SIZE = (1024, 1024)
_HEADER = ("Image Index", "Finding Label")


def _box_part(box: tuple[float, float, float, float]) -> MaskPart:
    return lambda: box_mask(box, NIH_SIZE)


def _box(cells: list[str], where: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(cell) for cell in cells)
    except ValueError:
        raise DollError(f"{where}: box {cells!r} is not four numbers") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise DollError(f"{where}: box {cells!r} must be finite, with w, h >= 0")
    return x, y, w, h


def read_nih_bbox(path: Path) -> GroundTruth:
    """The boxes of an NIH ``BBox_List_2017.csv`` (see the module docstring).

    :raises DollError: for another header, a row without six cells (or with more that
        are not empty), or a box that is not four finite numbers with ``w, h >= 0``.
    """
    try:
        with existing_file(path).open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DollError(f"cannot read {path} as CSV ({exc})") from None
    if not rows or tuple(c.strip() for c in rows[0][:2]) != _HEADER:
        raise DollError(
            f"{path}: not NIH's BBox_List_2017.csv (the header must start with "
            "'Image Index,Finding Label,Bbox [x,y,w,h]')"
        )
    images: dict[str, ImageTruth] = {}
    covered: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}: line {line}"
        if len(row) < 6 or any(cell.strip() for cell in row[6:]):
            raise DollError(f"{where}: expected 'image,finding,x,y,w,h', got {','.join(row)!r}")
        image_id, finding = row[0].strip(), row[1].strip()
        if not image_id or not finding:
            raise DollError(f"{where}: no image name or finding")
        name = observation_name(finding)
        covered.append(name)
        images.setdefault(image_id, ImageTruth(NIH_SIZE)).add(
            name, _box_part(_box(row[2:6], where))
        )
    return GroundTruth(f"nih-bbox:{path}", images, covered, form="boxes")
