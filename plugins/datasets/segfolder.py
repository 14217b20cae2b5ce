"""segfolder: an image folder and either one binary-mask folder per class, one folder of
binary masks of one class, or one folder of index masks, matched to images by file stem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Unpack

from doll_core.data.maskrule import MaskRule
from doll_core.data.samples import ImageDataset, ReaderOptions, check_choice
from doll_core.errors import DollError
from doll_plugins.datasets.masks import (
    ClassMasks,
    files_by_stem,
    load_image_and_masks,
    pixel_fractions,
    read_class_masks,
    require_file,
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
        follow_links: bool = False,
        foreground_values: Sequence[int] | None = None,
        ignore_values: Sequence[int] = (),
        layout: Literal["auto", "folders", "binary", "index"] = "auto",
        **options: Unpack[ReaderOptions],
    ) -> None:
        """:param follow_links: read files that symbolic links lead to outside ``root``
            (refused by default, like paths that climb out of it).
        :param images: image folder, relative to ``root``.
        :param masks: mask folder, relative to ``root``, read by ``layout``.
        :param layout: ``folders``: each sub-folder of ``masks`` is a class of binary
            masks; ``binary``: ``masks`` holds the binary masks of one class (named
            ``classes[0]``, default the folder's name), as V7 and many publishers ship
            them; ``index``: ``masks`` holds index masks, pixel value ``v`` in ``1..K``
            meaning ``classes[v - 1]`` and 0 background; ``auto``: ``folders`` if
            ``masks`` has sub-folders, else ``index``.
        :param classes: class names (and order). Folders: a subset of the sub-folders
            (default: all, sorted). Index masks: required. Binary: at most one.
        :param foreground_values: / :param ignore_values: which mask values are foreground
            and which are left out (:class:`~doll_core.data.maskrule.MaskRule`).
        """
        super().__init__(root, **options)
        self.rule = MaskRule.from_options(foreground_values, ignore_values)
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
        chosen = check_choice("layout", layout, ("auto", "folders", "binary", "index"))
        if chosen == "auto":
            chosen = "folders" if subfolders else "index"
        self.layout = chosen
        self.index_masks = chosen == "index"
        if chosen == "index":
            if not classes:
                raise DollError(
                    f"segfolder: {self.mask_dir} holds index masks; name their classes "
                    "with classes=[...] (value 1 = first class), or set layout = 'binary' "
                    "for binary masks of one class"
                )
            self.rule.check_index_masks("segfolder")
            self.classes = list(classes)
            self._mask_dirs = {"": self.mask_dir}
        elif chosen == "binary":
            if classes is not None and len(classes) != 1:
                raise DollError("segfolder: layout 'binary' holds one class; give at most one")
            self.classes = list(classes or [self.mask_dir.name])
            self._mask_dirs = {self.classes[0]: self.mask_dir}
        else:
            self.classes = list(classes) if classes else subfolders
            unknown = [c for c in self.classes if c not in subfolders]
            if unknown:
                raise DollError(
                    f"segfolder: no mask folder for classes {unknown} in {self.mask_dir}; "
                    f"it has: {', '.join(subfolders) or 'no sub-folders'}"
                )
            self._mask_dirs = {c: self.mask_dir / c for c in self.classes}
        self._masks = {c: files_by_stem(folder) for c, folder in self._mask_dirs.items()}

    def __len__(self) -> int:
        return len(self._stems)

    def sample_id(self, index: int) -> str:
        return self._stems[index]

    def _read_masks(self, stem: str) -> ClassMasks:
        def find(name: str, what: str) -> Path:
            folder = self._mask_dirs[name]
            return require_file(self._masks[name], stem, folder, what, root=self.contained_in)

        if not self.index_masks:
            files = {c: [find(c, f"{c} mask")] for c in self.classes}
            return read_class_masks(self.rule, files)
        values, read = self.rule.read_index(find("", "index mask"), len(self.classes))
        foreground = [values == k + 1 for k in range(len(self.classes))]
        ignored = [read.ignored] * len(self.classes)
        return ClassMasks(foreground, ignored, {c: read.counts for c in self.classes})

    def load(self, index: int) -> dict[str, Any]:
        stem = self._stems[index]
        image = require_file(self._images, stem, self.image_dir, "image", root=self.contained_in)
        return load_image_and_masks(self, image, self._read_masks(stem), stem, self.rule)

    def summary(self) -> dict[str, Any]:
        return {
            "images": len(self),
            "classes": self.classes,
            "mask_layout": self.layout,
            "foreground_values": list(self.rule.foreground_values or []) or "any non-zero",
            "ignore_values": list(self.rule.ignore_values),
            **pixel_fractions(self, self.classes),
        }
