"""Helpers shared by the segmentation readers: finding files by stem, reading masks by
the readers' :class:`~doll_core.data.maskrule.MaskRule`, making samples and summarising
what the masks hold.

A segmentation sample is ``image`` float32 ``[C, H, W]``, ``mask`` float32 ``[K, H, W]``
of 0/1, ``id``, ``report`` (what the files were: :func:`segmentation_sample`) and, when
the reader ignores some mask values, ``mask_weight`` float32 ``[K, H, W]``: 0 at ignored
pixels, 1 elsewhere.

Every file a reader opens goes through :func:`require_file`, which checks it with
:func:`~doll_core.data.paths.resolves_inside`: a listed file that is a symbolic link out of
the dataset root is refused with :class:`ImageReadError`, so the sample is skipped with
that reason (or stops the run with ``on_error="fail"``) like any other unreadable file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doll_core.data.imageio import (
    IMAGE_EXTENSIONS,
    ImageFacts,
    ImageReadError,
    resize_image,
    resize_mask,
)
from doll_core.data.maskrule import MaskRead, MaskRule
from doll_core.data.paths import resolves_inside
from doll_core.data.samples import ImageDataset, SkippedSample

#: ``doll data inspect`` counts an image as annotated in colour when at least this
#: fraction of its pixels is coloured (a JPEG's chroma noise stays far below it).
ANNOTATED_COLOUR_FRACTION = 5e-4


def files_by_stem(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> dict[str, Path]:
    """``{stem: path}`` of the image files directly in ``folder`` (one listing, no reads).

    Symbolic links are listed whatever they point to (even nothing), so that a link out of
    the dataset or a dangling one is reported when its sample is read, not silently left
    out of the dataset.
    """
    if not folder.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if (p.is_symlink() or p.is_file()) and p.suffix.lower() in extensions
    }


def inside_root(root: Path, path: Path) -> Path:
    """``path``, a file found by listing a folder under ``root``, checked to resolve inside
    ``root`` (following symbolic links).

    :raises ImageReadError: naming the file relative to ``root`` when it leads outside.
    """
    try:
        relative = path.relative_to(root)
    except ValueError:
        raise ImageReadError(path, f"path is not inside the dataset folder {root}") from None
    return resolves_inside(root, path, relative)


def require_file(
    table: dict[str, Path], stem: str, folder: Path, what: str, *, root: Path | None
) -> Path:
    """``table[stem]``, checked to stay inside the dataset folder ``root``
    (:func:`inside_root`); ``root=None`` follows links anywhere (the readers'
    ``follow_links`` option, for datasets whose folders link to another disk).

    :raises ImageReadError: saying which file is missing, or which one leads out of
        ``root`` through a symbolic link (and how to allow it).
    """
    try:
        path = table[stem]
    except KeyError:
        raise ImageReadError(folder / f"{stem}.*", f"no {what} for image {stem!r}") from None
    if root is None:
        return path
    try:
        return inside_root(root, path)
    except ImageReadError as exc:
        raise ImageReadError(
            exc.path,
            f"{exc.reason} (if the dataset's folders link elsewhere on purpose, set the "
            "dataset option follow_links = true)",
        ) from None


def same_size(masks: Sequence[tuple[Path, np.ndarray]]) -> list[np.ndarray]:
    """The masks of ``(file, mask)`` pairs, checked to be of one size (they are stacked).

    :raises ImageReadError: naming the first file whose size differs from the first one's.
    """
    first_path, first = masks[0]
    for path, mask in masks[1:]:
        if mask.shape != first.shape:
            raise ImageReadError(
                path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} pixels, but {first_path} is "
                f"{first.shape[1]}x{first.shape[0]}: the masks of one image must be one size",
            )
    return [mask for _, mask in masks]


@dataclass(frozen=True)
class ClassMasks:
    """One sample's masks at their files' size: per class, ``foreground`` and ``ignored``
    (``bool [H, W]``), and the value ``counts`` of its files (summed when several files,
    such as JSRT's two lungs, make one class)."""

    foreground: list[np.ndarray]
    ignored: list[np.ndarray]
    counts: dict[str, dict[str, int]]

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.foreground[0].shape[0]), int(self.foreground[0].shape[1]))


def read_class_masks(rule: MaskRule, files: Mapping[str, Sequence[Path]]) -> ClassMasks:
    """Read every class's binary mask files (``{class: [file, ...]}``) by ``rule``; a class
    of several files is their union, and a pixel one file ignores is ignored unless
    another file makes it foreground.

    :raises ImageReadError: for an unreadable file, or files of different sizes.
    """
    reads: dict[str, list[MaskRead]] = {}
    pairs: list[tuple[Path, np.ndarray]] = []
    for name, paths in files.items():
        reads[name] = [rule.read(path) for path in paths]
        pairs += [(path, read.foreground) for path, read in zip(paths, reads[name], strict=True)]
    same_size(pairs)
    foreground, ignored, counts = [], [], {}
    for name, parts in reads.items():
        union = np.logical_or.reduce([part.foreground for part in parts])
        foreground.append(union)
        ignored.append(np.logical_or.reduce([part.ignored for part in parts]) & ~union)
        counts[name] = _summed([part.counts for part in parts])
    return ClassMasks(foreground, ignored, counts)


def _summed(tables: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for table in tables:
        for value, count in table.items():
            total[value] = total.get(value, 0) + count
    return dict(sorted(total.items(), key=lambda item: (item[0] == "other", len(item[0]), item[0])))


def segmentation_sample(
    dataset: ImageDataset,
    image: torch.Tensor,
    facts: ImageFacts,
    masks: ClassMasks,
    sample_id: str,
    rule: MaskRule,
) -> dict[str, Any]:
    """A segmentation sample (see the module) from an image ``[C, H, W]`` as read and its
    masks: the image resized to the dataset size, the masks (and, when ``rule`` ignores
    values, ``mask_weight``) to the image's, nearest-neighbour with separate x/y scales.

    ``report`` says what the files held: ``mask_values`` (:attr:`ClassMasks.counts`),
    ``mask_resized`` ``{"from": [H, W], "to": [H, W]}`` when the masks' size differs from
    the image's native size, and ``colour_fraction`` for colour image files.
    """
    image = resize_image(image, dataset.size)
    size = (int(image.shape[-2]), int(image.shape[-1]))
    stacked = torch.from_numpy(np.stack(masks.foreground).astype(np.float32))
    sample: dict[str, Any] = {"image": image, "mask": resize_mask(stacked, size), "id": sample_id}
    if rule.ignores:
        weight = torch.from_numpy((~np.stack(masks.ignored)).astype(np.float32))
        sample["mask_weight"] = resize_mask(weight, size)
    report: dict[str, Any] = {"mask_values": masks.counts}
    if masks.size != facts.size:
        report["mask_resized"] = {"from": list(masks.size), "to": list(facts.size)}
    if facts.colour_fraction is not None:
        report["colour_fraction"] = facts.colour_fraction
    sample["report"] = report
    return sample


def load_image_and_masks(
    dataset: ImageDataset, image_path: Path, masks: ClassMasks, sample_id: str, rule: MaskRule
) -> dict[str, Any]:
    """:func:`segmentation_sample` of an image file (at the dataset size, through its
    image cache: :meth:`~doll_core.data.samples.ImageDataset.read_sized`) and its masks."""
    image, facts = dataset.read_sized(image_path)
    return segmentation_sample(dataset, image, facts, masks, sample_id, rule)


def pixel_fractions(dataset: ImageDataset, classes: Sequence[str]) -> dict[str, Any]:
    """What the readable samples' masks hold (reads every sample): per class the mean
    foreground and ignored fractions of a sample's pixels (at the dataset size), and the
    fraction of pixels of each value met in the mask files (at their own size); the
    number of samples whose masks were resized to their image, and of colour images
    with burned-in colour annotation (:data:`ANNOTATED_COLOUR_FRACTION`)."""
    totals, ignored = np.zeros(len(classes)), np.zeros(len(classes))
    values: dict[str, dict[str, int]] = {name: {} for name in classes}
    readable = resized = coloured = 0
    skipped: list[dict[str, str]] = []
    for index in range(len(dataset)):
        sample = dataset[index]
        if isinstance(sample, SkippedSample):
            skipped.append({"id": sample.id, "path": sample.path, "reason": sample.reason})
            continue
        readable += 1
        totals += sample["mask"].float().mean(dim=(1, 2)).numpy()
        if "mask_weight" in sample:
            ignored += (1 - sample["mask_weight"]).mean(dim=(1, 2)).numpy()
        report = sample.get("report", {})
        for name, counts in report.get("mask_values", {}).items():
            values[name] = _summed([values.get(name, {}), counts])
        resized += "mask_resized" in report
        coloured += report.get("colour_fraction", 0) >= ANNOTATED_COLOUR_FRACTION
    fractions, ignored = totals / max(readable, 1), ignored / max(readable, 1)
    return {
        "readable": readable,
        "pixel_fraction": {
            name: round(float(f), 6) for name, f in zip(classes, fractions, strict=True)
        },
        "ignored_fraction": {
            name: round(float(f), 6) for name, f in zip(classes, ignored, strict=True)
        },
        "mask_values": {name: _as_fractions(table) for name, table in values.items()},
        "masks_resized_to_image": resized,
        "images_with_colour_annotation": coloured,
        "skipped": skipped,
    }


def _as_fractions(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {value: round(count / total, 6) for value, count in counts.items()} if total else {}
