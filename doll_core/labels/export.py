"""A label store written as others read segmentations: CheXlocalize JSON or PNG masks.

Each map of the store (uint8 ``[R, R]``, value / 255 in ``[0, 1]``) becomes a binary
mask: resized to the output size (bilinear, ``align_corners=False``, as CheXlocalize
resizes its heatmaps), then foreground where the value is ``>= threshold`` and above 0
(the rule by which pre-training reads a store with a threshold,
:class:`~doll_core.labels.dataset.LabeledImages`). The output size is the store's map
size, or, given ground truth (``sizes``), each image's native size there, which is what
CheXlocalize's ``eval.py`` needs (it asserts equal shapes).

* ``chexlocalize``: ``{image_id: {task: {"size": [H, W], "counts": str}}}``, the COCO RLE
  of CheXlocalize's ``encode_segmentation``, every one of its ten tasks for every image
  (an empty mask where the store has no map: CheXlocalize's evaluation reads all ten)
  under its names (``"Airspace Opacity"``), other observations under theirs.
* ``png``: ``OUT/<image_id>/<observation>.png``, one 8-bit PNG (0, 255) per map,
  ``<observation>`` in lower case with ``_`` for spaces.

The image id is the ground truth's one an image matches
(:mod:`doll_core.groundtruth.matching`) when ``sizes`` is given, else the store id's
CheXlocalize form where it has one (a CheXpert path), else the store id. Store images the
ground truth does not list are left out and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from doll_core.atomic import atomic_write_text
from doll_core.data.paths import contained_path
from doll_core.errors import DollError
from doll_core.groundtruth.matching import chexlocalize_id, match_ids
from doll_core.groundtruth.names import CHEXLOCALIZE_TASKS, chexlocalize_name
from doll_core.groundtruth.rle import encode_mask
from doll_core.groundtruth.truth import GroundTruth
from doll_core.labels.store import LabelStore
from doll_core.metrics.chexlocalize import resize_map
from doll_core.observations import OBSERVATIONS
from doll_core.phantom.layout import observation_slug

ExportFormat = Literal["chexlocalize", "png"]
#: The binarisation threshold of exported labels (pre-training's customary 0.5).
EXPORT_THRESHOLD = 0.5


def binary_label(
    label: torch.Tensor, size: tuple[int, int], threshold: float = EXPORT_THRESHOLD
) -> np.ndarray:
    """bool ``[H, W]`` of one uint8 label ``[R, R]`` at ``size`` (module docstring)."""
    return binarised(resize_map(label.float() / 255, size), threshold)


def binarised(soft: torch.Tensor, threshold: float = EXPORT_THRESHOLD) -> np.ndarray:
    """bool ``[H, W]`` of a label already resized, as values in ``[0, 1]``: ``>=
    threshold`` and above 0."""
    return ((soft >= threshold) & (soft > 0)).numpy()


@dataclass
class ExportedImage:
    """One image's masks as exported: its id there and ``{observation: bool [H, W]}``."""

    image_id: str
    size: tuple[int, int]
    masks: dict[str, np.ndarray]


@dataclass
class ExportReport:
    """What an export wrote: images, masks, and the store ids left out."""

    out: Path
    images: int = 0
    masks: int = 0
    left_out: list[str] = field(default_factory=list)


def exported_images(
    store: LabelStore,
    threshold: float = EXPORT_THRESHOLD,
    sizes: GroundTruth | None = None,
    report: ExportReport | None = None,
) -> Iterator[ExportedImage]:
    """The store's images as binary masks (module docstring), one image at a time; the
    ids ``sizes`` does not list are appended to ``report.left_out``."""
    if not 0 <= threshold <= 1:
        raise DollError(f"threshold must be in [0, 1], got {threshold}")
    matched = match_ids(store.ids, sizes) if sizes is not None else {}
    for store_id in store.ids:
        observations, maps = store.labels(store_id)
        if sizes is None:
            image_id = chexlocalize_id(store_id) or store_id
            size = (int(maps.shape[-2]), int(maps.shape[-1]))
        elif store_id in matched:
            image_id = matched[store_id]
            native = sizes.size(image_id)
            if native is None:
                raise DollError(f"{sizes.source}: image {image_id!r} records no size")
            size = native
        else:
            if report is not None:
                report.left_out.append(store_id)
            continue
        masks = {
            OBSERVATIONS[index]: binary_label(maps[k], size, threshold)
            for k, index in enumerate(observations)
        }
        yield ExportedImage(image_id, size, masks)


def _chexlocalize_entry(image: ExportedImage) -> dict[str, Any]:
    empty = np.zeros(image.size, dtype=bool)
    entry = {task: encode_mask(empty) for task in CHEXLOCALIZE_TASKS}
    for observation, mask in image.masks.items():
        entry[chexlocalize_name(observation)] = encode_mask(mask)
    return entry


def export_store(
    store: str | Path,
    out: str | Path,
    export_format: ExportFormat = "chexlocalize",
    *,
    threshold: float = EXPORT_THRESHOLD,
    sizes: GroundTruth | None = None,
) -> ExportReport:
    """Write the label store ``store`` to ``out`` (a JSON file, or a folder for ``png``).

    :raises DollError: for a bad threshold, an unknown format, or an image id that would
        lead outside the PNG folder.
    """
    if export_format not in ("chexlocalize", "png"):
        raise DollError(f"unknown export format {export_format!r}; formats: chexlocalize, png")
    labels = LabelStore(store)
    report = ExportReport(Path(out))
    images = exported_images(labels, threshold, sizes, report)
    if export_format == "chexlocalize":
        document = {}
        for image in images:
            document[image.image_id] = _chexlocalize_entry(image)
            report.images += 1
            report.masks += len(image.masks)
        atomic_write_text(report.out, json.dumps(document) + "\n")
        return report
    for image in images:
        folder = contained_path(report.out, image.image_id)
        folder.mkdir(parents=True, exist_ok=True)
        for observation, mask in image.masks.items():
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                folder / f"{observation_slug(observation)}.png"
            )
            report.masks += 1
        report.images += 1
    return report
