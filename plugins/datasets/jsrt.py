"""JSRT radiographs (raw ``.IMG``) with SCR organ masks (``<fold>/masks/<organ>/<id>.gif``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

import torch

from doll_core.data.imageio import JSRT_SHAPE, ImageFacts, jsrt_to_display, read_jsrt_img
from doll_core.data.maskrule import MaskRule
from doll_core.data.samples import ImageDataset, ReaderOptions
from doll_core.errors import DollError
from doll_plugins.datasets.masks import (
    files_by_stem,
    pixel_fractions,
    read_class_masks,
    require_file,
    segmentation_sample,
)

#: SCR's organ folder names.
SCR_ORGANS = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
#: Class names that merge organs.
MERGED_CLASSES = {
    "lungs": ("left lung", "right lung"),
    "clavicles": ("left clavicle", "right clavicle"),
}


class JSRT(ImageDataset):
    """JSRT .IMG (2048x2048, 12-bit big-endian, inverted) with SCR masks per organ."""

    def __init__(
        self,
        root: str | Path,
        *,
        classes: Sequence[str] = ("lungs", "heart", "clavicles"),
        fold: str | None = None,
        image_shape: Sequence[int] = JSRT_SHAPE,
        follow_links: bool = False,
        foreground_values: Sequence[int] | None = None,
        ignore_values: Sequence[int] = (),
        **options: Unpack[ReaderOptions],
    ) -> None:
        """:param follow_links: read files that symbolic links lead to outside ``root``.
        :param root: a folder holding the ``.IMG`` files and the SCR ``masks`` folders
            (searched recursively, e.g. ``All247images/`` and ``scr/fold1/masks/``).
        :param classes: SCR organs (``left lung``, ``right lung``, ``heart``,
            ``left clavicle``, ``right clavicle``) or merged ones (``lungs``, ``clavicles``).
        :param fold: only images with masks in this SCR fold (``fold1``/``fold2``).
        :param image_shape: raw image shape; JSRT's is 2048 x 2048.
        :param foreground_values: / :param ignore_values: which mask values (SCR's GIFs:
            palette indices) are foreground and which are left out
            (:class:`~doll_core.data.maskrule.MaskRule`).
        """
        super().__init__(root, **options)
        self.rule = MaskRule.from_options(foreground_values, ignore_values)
        #: where listed files must stay (None: symbolic links are followed anywhere)
        self.contained_in: Path | None = None if follow_links else self.root
        known = (*SCR_ORGANS, *MERGED_CLASSES)
        unknown = [c for c in classes if c not in known]
        if unknown or not classes:
            raise DollError(f"jsrt: unknown classes {unknown}; choose from {', '.join(known)}")
        self.classes = list(classes)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self._images = {
            p.stem: p for p in sorted(self.root.rglob("*")) if p.suffix.lower() == ".img"
        }
        if not self._images:
            raise DollError(f"jsrt: no .IMG files under {self.root}")
        mask_roots = sorted(p for p in self.root.rglob("masks") if p.is_dir())
        if fold is not None:
            mask_roots = [p for p in mask_roots if p.parent.name == fold]
        if not mask_roots:
            where = f" for fold {fold!r}" if fold else ""
            raise DollError(f"jsrt: no SCR masks folder{where} under {self.root}")
        needed = sorted({o for c in self.classes for o in MERGED_CLASSES.get(c, (c,))})
        self._masks: dict[str, dict[str, Path]] = {organ: {} for organ in needed}
        self._mask_dirs: dict[str, Path] = {}
        for mask_root in mask_roots:
            for organ in needed:
                self._masks[organ].update(files_by_stem(mask_root / organ, (".gif", ".png")))
                self._mask_dirs.setdefault(organ, mask_root / organ)
        with_masks = set().union(*(table.keys() for table in self._masks.values()))
        self._stems = sorted(stem for stem in self._images if stem in with_masks)
        self.without_masks = sorted(set(self._images) - with_masks)
        if not self._stems:
            raise DollError(f"jsrt: none of the {len(self._images)} images has SCR masks")

    def __len__(self) -> int:
        return len(self._stems)

    def sample_id(self, index: int) -> str:
        return self._stems[index]

    def load(self, index: int) -> dict[str, Any]:
        stem = self._stems[index]
        raw = read_jsrt_img(
            require_file(self._images, stem, self.root, "image", root=self.contained_in),
            self.image_shape,
        )
        image = torch.from_numpy(jsrt_to_display(raw))
        if not self.grayscale:
            image = image.repeat(3, 1, 1)
        files = {
            name: [
                require_file(
                    self._masks[organ],
                    stem,
                    self._mask_dirs[organ],
                    f"{organ} mask",
                    root=self.contained_in,
                )
                for organ in MERGED_CLASSES.get(name, (name,))
            ]
            for name in self.classes
        }
        facts = ImageFacts("JSRT", "I;16B", self.image_shape)
        masks = read_class_masks(self.rule, files)
        return segmentation_sample(self, image, facts, masks, stem, self.rule)

    def summary(self) -> dict[str, Any]:
        return {
            "images": len(self),
            "images_without_masks": len(self.without_masks),
            "classes": self.classes,
            **pixel_fractions(self, self.classes),
        }
