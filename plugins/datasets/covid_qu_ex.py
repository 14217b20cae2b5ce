"""COVID-QU-Ex infection set: ``Infection Segmentation Data/{Train,Val,Test}/
{COVID-19,Non-COVID,Normal}/{images,infection masks,lung masks}/*.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

from doll_core.data.maskrule import MaskRule
from doll_core.data.samples import ImageDataset, ReaderOptions, check_choice
from doll_core.errors import DollError
from doll_plugins.datasets.masks import (
    files_by_stem,
    load_image_and_masks,
    pixel_fractions,
    read_class_masks,
    require_file,
)

SUBSET = "Infection Segmentation Data"
SPLITS = ("Train", "Val", "Test")
CATEGORIES = ("COVID-19", "Non-COVID", "Normal")
TASK_FOLDERS = {"infection": "infection masks", "lungs": "lung masks"}


class CovidQuEx(ImageDataset):
    """COVID-QU-Ex infection segmentation set; task 'infection' or 'lungs'."""

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "Train",
        task: str = "infection",
        categories: Sequence[str] = CATEGORIES,
        follow_links: bool = False,
        foreground_values: Sequence[int] | None = None,
        ignore_values: Sequence[int] = (),
        **options: Unpack[ReaderOptions],
    ) -> None:
        """:param follow_links: read files that symbolic links lead to outside ``root``.
        :param root: the folder holding ``Infection Segmentation Data`` or that folder.
        :param split: ``Train``, ``Val`` or ``Test`` (any case).
        :param task: ``infection`` (infection masks) or ``lungs`` (lung masks).
        :param categories: which of ``COVID-19``, ``Non-COVID``, ``Normal`` to read.
        :param foreground_values: / :param ignore_values: which mask values are foreground
            and which are left out (:class:`~doll_core.data.maskrule.MaskRule`).
        """
        super().__init__(root, **options)
        self.rule = MaskRule.from_options(foreground_values, ignore_values)
        #: where listed files must stay (None: symbolic links are followed anywhere)
        self.contained_in: Path | None = None if follow_links else self.root
        by_lower = {s.lower(): s for s in SPLITS}
        self.split = by_lower.get(str(split).lower(), "")
        check_choice("split", self.split or split, SPLITS)
        self.task = check_choice("task", task, tuple(TASK_FOLDERS))
        self.classes = [self.task]
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise DollError(f"covid-qu-ex: unknown categories {unknown}; choose from {CATEGORIES}")
        base = self.root / SUBSET if (self.root / SUBSET).is_dir() else self.root
        split_dir = base / self.split
        if not split_dir.is_dir():
            raise DollError(f"covid-qu-ex: split folder not found: {split_dir}")
        self.categories = list(categories)
        self._items: list[tuple[str, str]] = []  # (category, stem)
        self._images: dict[str, dict[str, Path]] = {}
        self._masks: dict[str, dict[str, Path]] = {}
        self._mask_dirs: dict[str, Path] = {}
        for category in self.categories:
            folder = split_dir / category
            self._images[category] = files_by_stem(folder / "images")
            self._mask_dirs[category] = folder / TASK_FOLDERS[self.task]
            self._masks[category] = files_by_stem(self._mask_dirs[category])
            self._items += [(category, stem) for stem in sorted(self._images[category])]
        if not self._items:
            raise DollError(f"covid-qu-ex: no images under {split_dir}/<category>/images")

    def __len__(self) -> int:
        return len(self._items)

    def sample_id(self, index: int) -> str:
        category, stem = self._items[index]
        return f"{category}/{stem}"

    def load(self, index: int) -> dict[str, Any]:
        category, stem = self._items[index]
        mask_path = require_file(
            self._masks[category],
            stem,
            self._mask_dirs[category],
            TASK_FOLDERS[self.task][:-1],
            root=self.contained_in,
        )
        image_path = require_file(
            self._images[category],
            stem,
            self._mask_dirs[category].parent / "images",
            "image",
            root=self.contained_in,
        )
        masks = read_class_masks(self.rule, {self.task: [mask_path]})
        sample = load_image_and_masks(self, image_path, masks, self.sample_id(index), self.rule)
        sample["category"] = category
        return sample

    def summary(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "task": self.task,
            "images": len(self),
            "per_category": {c: len(self._images[c]) for c in self.categories},
            "classes": [self.task],
            **pixel_fractions(self, [self.task]),
        }
