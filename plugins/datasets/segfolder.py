"""segfolder: an image folder and either one binary-mask folder per class or one folder
of index masks, matched to images by file stem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from doll_core.data.imageio import ImageReadError, read_index_mask, read_mask
from doll_core.data.samples import ImageDataset, OnError
from doll_core.errors import DollError
from doll_plugins.datasets.masks import (
    files_by_stem,
    load_image_and_masks,
    pixel_fractions,
    require_file,
    same_size,
)


class SegFolder(ImageDataset):
    """Image folder + per-class binary mask folders (or index masks), matched by stem."""

    def __init__(
        self,
        root: str | Path,
        *,
        images: str = "images",
        masks: str = "masks",
        classes: Sequence[str] | None = None,
        size: int | Sequence[int] | None = None,
        grayscale: bool = True,
        on_error: OnError = "skip",
        follow_links: bool = False,
    ) -> None:
        """:param follow_links: read files that symbolic links lead to outside ``root``
            (refused by default, like paths that climb out of it).
        :param images: image folder, relative to ``root``.
        :param masks: mask folder, relative to ``root``. If it has sub-folders, each is a
            class of binary masks (any non-zero pixel is foreground); otherwise it holds
            index masks, pixel value ``v`` in ``1..K`` meaning ``classes[v - 1]`` and 0
            background.
        :param classes: class names (and order). Binary folders: a subset of the
            sub-folders (default: all, sorted). Index masks: required.
        """
        super().__init__(root, size=size, grayscale=grayscale, on_error=on_error)
        #: where listed files must stay (None: symbolic links are followed anywhere)
        self.contained_in: Path | None = None if follow_links else self.root
        self.image_dir = self.root / images
        self.mask_dir = self.root / masks
        for folder, what in ((self.image_dir, "image"), (self.mask_dir, "mask")):
            if not folder.is_dir():
                raise DollError(f"segfolder: {what} folder not found: {folder}")
        self._images = files_by_stem(self.image_dir)
        if not self._images:
            raise DollError(f"segfolder: no image files in {self.image_dir}")
        self._stems = sorted(self._images)
        subfolders = sorted(p.name for p in self.mask_dir.iterdir() if p.is_dir())
        self.index_masks = not subfolders
        if self.index_masks:
            if not classes:
                raise DollError(
                    f"segfolder: {self.mask_dir} holds index masks; name their classes "
                    "with classes=[...] (value 1 = first class)"
                )
            self.classes = list(classes)
            self._masks = {"": files_by_stem(self.mask_dir)}
        else:
            self.classes = list(classes) if classes else subfolders
            unknown = [c for c in self.classes if c not in subfolders]
            if unknown:
                raise DollError(
                    f"segfolder: no mask folder for classes {unknown} in {self.mask_dir}; "
                    f"it has: {', '.join(subfolders)}"
                )
            self._masks = {c: files_by_stem(self.mask_dir / c) for c in self.classes}

    def __len__(self) -> int:
        return len(self._stems)

    def sample_id(self, index: int) -> str:
        return self._stems[index]

    def _read_masks(self, stem: str) -> list[np.ndarray]:
        if not self.index_masks:
            paths = [
                require_file(
                    self._masks[c], stem, self.mask_dir / c, f"{c} mask", root=self.contained_in
                )
                for c in self.classes
            ]
            return same_size([(path, read_mask(path)) for path in paths])
        path = require_file(
            self._masks[""], stem, self.mask_dir, "index mask", root=self.contained_in
        )
        values = read_index_mask(path)
        if int(values.max(initial=0)) > len(self.classes):
            raise ImageReadError(
                path,
                f"index mask holds value {int(values.max())} but only "
                f"{len(self.classes)} classes are configured",
            )
        return [values == k + 1 for k in range(len(self.classes))]

    def load(self, index: int) -> dict[str, Any]:
        stem = self._stems[index]
        image = require_file(self._images, stem, self.image_dir, "image", root=self.contained_in)
        return load_image_and_masks(self, image, self._read_masks(stem), stem)

    def summary(self) -> dict[str, Any]:
        return {
            "images": len(self),
            "classes": self.classes,
            "mask_layout": "index" if self.index_masks else "binary folders",
            **pixel_fractions(self, self.classes),
        }
