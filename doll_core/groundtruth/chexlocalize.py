"""CheXlocalize's two JSON formats, told apart by their content.

* Annotations (``gt_annotations_*.json``): ``{image_id: {"img_size": [H, W], TASK:
  [polygon, ...]}}``, a polygon being ``[[x, y], ...]`` in pixels. A task's polygons are
  filled as CheXlocalize's ``create_mask`` fills them: drawn one after the other on a
  1-bit PIL image of ``(W, H)`` with ``ImageDraw.polygon(points, outline=1, fill=1)``, so
  the outline's pixels belong to the mask.
* Segmentations (``gt_segmentations_*.json``, and what its ``heatmap_to_segmentation``
  writes): ``{image_id: {TASK: {"size": [H, W], "counts": RLE}}}`` in COCO's RLE.

Task names are mapped to observations (``"Airspace Opacity"`` is ``"Lung Opacity"``).
A CheXlocalize file covers its ten tasks: a task an image does not list is absent, and so
is one whose RLE is all zeros (CheXlocalize writes every task for every image), which
adds no part to the image (its size still counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from doll_core.errors import DollError
from doll_core.groundtruth.files import checked_size, json_object, load_json
from doll_core.groundtruth.names import CHEXLOCALIZE_OBSERVATIONS, observation_name
from doll_core.groundtruth.rle import decode_rle, rle_size, string_counts
from doll_core.groundtruth.truth import GroundTruth, ImageTruth, MaskPart

#: The key of an annotations entry that holds the image's size.
SIZE_KEY = "img_size"
#: The longest RLE code of a mask of zeros only (one run, 5 bits a character: 2**35 pixels).
_EMPTY_CODE_LENGTH = 7
Point = tuple[float, float]


def fill_polygons(polygons: list[list[Point]], size: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]``: ``polygons`` drawn as CheXlocalize's ``create_mask`` draws them."""
    height, width = size
    canvas = Image.new("1", (width, height))
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon(polygon, outline=1, fill=1)
    return np.array(canvas, dtype=bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _polygons(value: object, where: str) -> list[list[Point]]:
    """``value`` checked to be a list of polygons of ``[x, y]`` points (2 at least, as PIL
    draws no polygon of one point)."""
    if not isinstance(value, list):
        raise DollError(f"{where}: expected a list of polygons, got {type(value).__name__}")
    polygons = []
    for k, polygon in enumerate(value):
        if (
            not isinstance(polygon, list)
            or len(polygon) < 2
            or not all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) for p in polygon
            )
        ):
            raise DollError(f"{where}: polygon {k} must be a list of 2 or more [x, y] points")
        polygons.append([(float(p[0]), float(p[1])) for p in polygon])
    return polygons


def _image_size(value: object, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise DollError(f"{where}: '{SIZE_KEY}' must be [H, W] (integers >= 1), got {value!r}")
    return checked_size(int(value[0]), int(value[1]), where)


def _polygon_part(polygons: list[list[Point]], size: tuple[int, int]) -> MaskPart:
    return lambda: fill_polygons(polygons, size)


def _rle_part(rle: dict[str, Any], where: str) -> MaskPart:
    return lambda: decode_rle(rle, where)


def _annotations_entry(entry: dict[str, Any], where: str) -> ImageTruth:
    size = _image_size(entry.get(SIZE_KEY), where)
    image = ImageTruth(size)
    for task, value in entry.items():
        if task != SIZE_KEY:
            image.add(
                observation_name(task), _polygon_part(_polygons(value, f"{where} {task!r}"), size)
            )
    return image


def _all_zeros(rle: dict[str, Any], size: tuple[int, int], where: str) -> bool:
    """Whether ``rle`` is one run of ``H * W`` zeros, as CheXlocalize writes an absent task
    (told from its short code without decoding anything longer)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return counts == [size[0] * size[1]]
    return len(counts) <= _EMPTY_CODE_LENGTH and string_counts(counts, where) == [size[0] * size[1]]


def _segmentations_entry(entry: dict[str, Any], where: str) -> ImageTruth:
    sizes = {}
    image = ImageTruth(None)
    for task, rle in entry.items():
        task_where = f"{where} {task!r}"
        sizes[task] = rle_size(rle, task_where)
        if not _all_zeros(rle, sizes[task], task_where):
            image.add(observation_name(task), _rle_part(rle, task_where))
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{task} {list(size)}" for task, size in sizes.items())
        raise DollError(f"{where}: its masks differ in size ({listed})")
    image.size = next(iter(sizes.values()), None)
    return image


def read_chexlocalize(path: Path) -> GroundTruth:
    """Either CheXlocalize format in ``path`` (see the module docstring).

    :raises DollError: for a file that is not JSON, not an object of image entries, or
        whose entries are neither format (or mix them), naming the image and task.
    """
    data = json_object(load_json(path), str(path))
    images: dict[str, ImageTruth] = {}
    form: str | None = None
    for image_id, entry in data.items():
        where = f"{path}: image {image_id!r}"
        entry = json_object(entry, where)
        this = "polygons" if SIZE_KEY in entry else "rle"
        if form is not None and this != form:
            raise DollError(
                f"{where}: mixes CheXlocalize's annotation (polygons, '{SIZE_KEY}') and "
                "segmentation (RLE) formats"
            )
        form = this
        reader = _annotations_entry if this == "polygons" else _segmentations_entry
        images[image_id] = reader(entry, where)
    covered = [*CHEXLOCALIZE_OBSERVATIONS, *(n for i in images.values() for n in i.parts)]
    return GroundTruth(f"chexlocalize:{path}", images, covered, form=form or "empty")
