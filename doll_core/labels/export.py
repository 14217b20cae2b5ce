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
  ``<observation>`` in lower case with ``_`` for spaces, and ``OUT/export.json`` (store,
  threshold, counts). The folder is written beside ``OUT`` and renamed into place whole,
  replacing an earlier export: no stale or half-written mask stays.

The image id is the ground truth's one an image matches
(:mod:`doll_core.groundtruth.matching`) when ``sizes`` is given, else the store id's
CheXlocalize form where it has one (a CheXpert path), else the store id. Store images the
ground truth does not list are left out and counted.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from doll_core.atomic import atomic_write_text, disk_full_error
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
    record = {"store": str(Path(store).absolute()), "threshold": threshold}
    _write_png_folder(report, images, record)
    return report


#: The record a PNG export folder holds; a folder with it is a DoLL export, replaced whole
#: by the next export to it.
PNG_RECORD = "export.json"


def _write_png_folder(
    report: ExportReport, images: Iterator[ExportedImage], record: dict[str, Any]
) -> None:
    """Write the masks into a fresh staging folder beside ``report.out``, then put it in
    place: a failed export (a full disk) leaves no half-written mask and the earlier
    export untouched, a finished one leaves no stale mask of an earlier one, and nothing
    is written through a link planted in the folder.

    :raises DollError: when ``report.out`` is a file, or a folder that holds files but is
        not a DoLL export (it is never emptied).
    """
    out = report.out
    if out.exists() and not out.is_dir():
        raise DollError(f"--out {out} is a file; the png format writes a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / PNG_RECORD).is_file():
        raise DollError(
            f"--out {out} holds files that are not a DoLL PNG export (no {PNG_RECORD}); "
            "choose an empty or new folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for image in images:
            folder = contained_path(staging, image.image_id)
            folder.mkdir(parents=True, exist_ok=True)
            for observation, mask in image.masks.items():
                path = folder / f"{observation_slug(observation)}.png"
                Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")
                report.masks += 1
            report.images += 1
        summary = {**record, "images": report.images, "masks": report.masks}
        atomic_write_text(staging / PNG_RECORD, json.dumps(summary, indent=2) + "\n")
        _swap_in(staging, out)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        full = disk_full_error(exc)
        if full is not None:
            raise DollError(
                f"no space left to export to {out} ({full.strerror}); nothing was "
                "changed there: free space and export again"
            ) from None
        raise


def _swap_in(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``, replacing an earlier export there (or a link in
    its place: the link is removed, never followed)."""
    if out.is_symlink():
        out.unlink()
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
