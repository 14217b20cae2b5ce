"""Helpers shared by the segmentation readers: finding files by stem, stacking masks and
summarising pixel fractions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doll_core.data.imageio import ImageReadError, read_image, resize_image, resize_mask
from doll_core.data.samples import ImageDataset, SkippedSample, to_tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def files_by_stem(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> dict[str, Path]:
    """``{stem: path}`` of the image files directly in ``folder`` (one listing, no reads)."""
    if not folder.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in extensions
    }


def require_file(table: dict[str, Path], stem: str, folder: Path, what: str) -> Path:
    """``table[stem]`` or an :class:`ImageReadError` saying which file is missing."""
    try:
        return table[stem]
    except KeyError:
        raise ImageReadError(folder / f"{stem}.*", f"no {what} for image {stem!r}") from None


def load_image_and_masks(
    dataset: ImageDataset, image_path: Path, masks: Iterable[np.ndarray], sample_id: str
) -> dict[str, Any]:
    """A segmentation sample: the image resized to the dataset size, the ``bool [H, W]``
    masks stacked to float32 ``[K, H, W]`` at the same size."""
    image = to_tensor(read_image(image_path, grayscale=dataset.grayscale, at_least=dataset.size))
    image = resize_image(image, dataset.size)
    stacked = torch.from_numpy(np.stack(list(masks)).astype(np.float32))
    stacked = resize_mask(stacked, (int(image.shape[-2]), int(image.shape[-1])))
    return {"image": image, "mask": stacked, "id": sample_id}


def pixel_fractions(dataset: ImageDataset, classes: Sequence[str]) -> dict[str, Any]:
    """Mean foreground fraction per class over the readable samples (reads every mask)."""
    totals = np.zeros(len(classes))
    readable = 0
    skipped: list[dict[str, str]] = []
    for index in range(len(dataset)):
        sample = dataset[index]
        if isinstance(sample, SkippedSample):
            skipped.append({"id": sample.id, "path": sample.path, "reason": sample.reason})
            continue
        readable += 1
        totals += sample["mask"].float().mean(dim=(1, 2)).numpy()
    fractions = totals / max(readable, 1)
    return {
        "readable": readable,
        "pixel_fraction": {
            name: round(float(f), 6) for name, f in zip(classes, fractions, strict=True)
        },
        "skipped": skipped,
    }
