"""COCO JSON (``images``, ``annotations``, ``categories``): polygons, RLEs and boxes.

An image's id is its ``file_name``; its size is its ``height`` and ``width``. An
annotation's ``segmentation`` is used when it has one: polygons (``[[x1, y1, x2, y2,
...], ...]``) rasterised as pycocotools' ``annToMask`` does, or an RLE (compressed or
not); an annotation without one is its ``bbox`` ``[x, y, w, h]``, drawn by
:mod:`doll_core.groundtruth.boxes`' rule. Category names map to observations by
:mod:`doll_core.groundtruth.names`; the file covers every category it lists.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from doll_core.errors import DollError
from doll_core.groundtruth.boxes import box_mask
from doll_core.groundtruth.files import checked_size, json_object, load_json
from doll_core.groundtruth.names import observation_name
from doll_core.groundtruth.rle import decode_polygons, decode_rle, rle_size
from doll_core.groundtruth.truth import GroundTruth, ImageTruth, MaskPart


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise DollError(f"{where}: COCO JSON needs a list '{key}'")
    return value


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: object, count: int | None = None) -> bool:
    return (
        isinstance(value, list)
        and (count is None or len(value) == count)
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )


def _part(annotation: dict[str, Any], size: tuple[int, int], where: str) -> MaskPart:
    """How to draw one annotation (see the module docstring)."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        if rle_size(segmentation, where) != size:
            raise DollError(
                f"{where}: RLE size {segmentation['size']} is not the image's {list(size)}"
            )
        return lambda: decode_rle(segmentation, where)
    if isinstance(segmentation, list) and segmentation:
        if not all(_numbers(p) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation):
            raise DollError(f"{where}: polygons must be lists of 3 or more x, y pairs")
        return lambda: decode_polygons(segmentation, size)
    box = annotation.get("bbox")
    if not isinstance(box, list) or not _numbers(box, 4) or box[2] < 0 or box[3] < 0:
        raise DollError(f"{where}: no segmentation, and no 'bbox' [x, y, w, h] with w, h >= 0")
    corners = [float(v) for v in box]
    return lambda: box_mask(corners, size)


def read_coco(path: Path) -> GroundTruth:
    """The annotations of a COCO JSON file (see the module docstring).

    :raises DollError: for a file that is not JSON or lacks the three lists; an image
        without ``id``, ``file_name``, ``height``, ``width``; an annotation of an unknown
        image or category, or with neither a segmentation nor a box.
    """
    data = json_object(load_json(path), str(path))
    where = str(path)
    categories: dict[int, str] = {}
    for category in _list(data, "categories", where):
        if not isinstance(category, dict) or not _integer(category.get("id")):
            raise DollError(f"{where}: a category without an integer 'id'")
        if not isinstance(category.get("name"), str):
            raise DollError(f"{where}: category {category['id']} has no 'name'")
        categories[category["id"]] = observation_name(category["name"])
    images: dict[str, ImageTruth] = {}
    names: dict[Any, str] = {}
    for image in _list(data, "images", where):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            raise DollError(f"{where}: an image without a 'file_name'")
        label = f"{where}: image {image['file_name']!r}"
        if not isinstance(image.get("id"), int | str) or not all(
            _integer(image.get(k)) and image[k] >= 1 for k in ("height", "width")
        ):
            raise DollError(
                f"{label} needs an 'id' (integer or string) and integer 'height', 'width' >= 1"
            )
        names[image["id"]] = image["file_name"]
        size = checked_size(image["height"], image["width"], label)
        images[image["file_name"]] = ImageTruth(size)
    for k, annotation in enumerate(_list(data, "annotations", where)):
        label = f"{where}: annotation {k}"
        if not isinstance(annotation, dict):
            raise DollError(f"{label} is not an object")
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        if not isinstance(image_id, int | str) or image_id not in names:
            raise DollError(f"{label}: unknown image_id {image_id!r}")
        if not _integer(category_id) or category_id not in categories:
            raise DollError(f"{label}: unknown category_id {category_id!r}")
        image = images[names[image_id]]
        assert image.size is not None
        part = _part(annotation, image.size, label)
        image.add(categories[category_id], part)
    return GroundTruth(f"coco:{path}", images, categories.values(), form="coco")
