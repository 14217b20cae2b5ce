"""Helpers shared by the segmentation readers: finding files by stem, stacking masks and
summarising pixel fractions.

Every file a reader opens goes through :func:`require_file`, which checks it with
:func:`~doll_core.data.paths.resolves_inside`: a listed file that is a symbolic link out of
the dataset root is refused with :class:`ImageReadError`, so the sample is skipped with
that reason (or stops the run with ``on_error="fail"``) like any other unreadable file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doll_core.data.dicom import DICOM_SUFFIXES
from doll_core.data.imageio import ImageReadError, read_image, resize_image, resize_mask
from doll_core.data.paths import resolves_inside
from doll_core.data.samples import ImageDataset, SkippedSample, to_tensor

#: what a reader lists as images; a file's content, not its name, decides how it is read
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", *DICOM_SUFFIXES)


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
