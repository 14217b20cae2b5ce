"""Which pixel values of a mask file are foreground, which are left out, and what values a
file holds: the ``foreground_values`` and ``ignore_values`` options of every mask reader.

Published masks are not always binary. V7's lung masks mark devices and markup with 127
("Ignore") beside 255 for lung; VOC marks object borders with 255. A reader given
``ignore_values = [127]`` leaves those pixels out of the fine-tuning loss and out of IoU
and Dice (weight 0 in the sample's ``mask_weight``) instead of counting them as lung.

A pixel's *value*, the number these options name, is what its file stores in one channel:
the grey level of ``1``/``L``/``I;16``/``I`` files (``1`` files as 0/255), the palette
index of ``P`` files, the grey channel of ``LA`` files, and the ITU-R 601 grey level
(Pillow's ``convert("L")``) of colour files; a fully transparent pixel's value is 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from doll_core.data.imageio import ImageReadError, mask_from_image, open_mask_file
from doll_core.errors import DollError

#: At most this many distinct values of one file are counted one by one.
MAX_COUNTED_VALUES = 64


def mask_values(image: Image.Image) -> np.ndarray:
    """The value of every pixel of an opened mask file (see the module): ``[H, W]`` in
    the file's own integer type (uint8 for 8-bit and colour files, uint16 for ``I;16``),
    so that a large mask is not copied into a wider one."""
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8) * np.uint8(255)
    if image.mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image)
    if image.mode == "LA":
        values = np.asarray(image.getchannel("L"))
        return np.where(np.asarray(image.getchannel("A")) > 0, values, np.uint8(0))
    rgba = image.convert("RGBA")
    values = np.asarray(rgba.convert("L"))
    return np.where(np.asarray(rgba.getchannel("A")) > 0, values, np.uint8(0))


def value_counts(values: np.ndarray) -> dict[str, int]:
    """``{value: pixels}`` of an integer ``[H, W]`` value map, as strings for JSON: the
    :data:`MAX_COUNTED_VALUES` most frequent ones, and the rest under ``"other"``."""
    if values.dtype in (np.uint8, np.uint16):  # a histogram: no sort of every pixel
        histogram = np.bincount(values.ravel(), minlength=1)
        found = np.flatnonzero(histogram)
        counts = histogram[found]
    else:
        found, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    kept = sorted(order[:MAX_COUNTED_VALUES].tolist())
    table = {str(int(found[i])): int(counts[i]) for i in kept}
    if len(found) > MAX_COUNTED_VALUES:
        table["other"] = int(counts[order[MAX_COUNTED_VALUES:]].sum())
    return table


@dataclass(frozen=True)
class MaskRead:
    """One mask file, read by a :class:`MaskRule`: ``foreground`` and ``ignored``, both
    ``bool [H, W]`` and never both true at a pixel, and the file's ``counts``
    (:func:`value_counts`)."""

    foreground: np.ndarray
    ignored: np.ndarray
    counts: dict[str, int]


def _value_list(option: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, int | str) or not isinstance(values, Iterable):
        values = [values]
    checked = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DollError(f"{option} must list pixel values (integers >= 0), got {value!r}")
        checked.append(int(value))
    return tuple(sorted(set(checked)))


@dataclass(frozen=True)
class MaskRule:
    """How a mask's values become foreground, background and ignored pixels.

    ``foreground_values``: the values that are foreground; ``None`` (the default) reads
    any pixel that shows something as foreground (:func:`~doll_core.data.imageio.read_mask`),
    except ignored ones. ``ignore_values``: values left out of losses and scores (default
    none). No value may be in both.
    """

    foreground_values: tuple[int, ...] | None = None
    ignore_values: tuple[int, ...] = ()

    @classmethod
    def from_options(cls, foreground_values: Any = None, ignore_values: Any = ()) -> MaskRule:
        """The rule of a reader's options, checked.

        :raises DollError: naming the option whose values are not pixel values, or a value
            given as both foreground and ignored.
        """
        foreground = (
            None
            if foreground_values is None
            else _value_list("foreground_values", foreground_values)
        )
        ignore = _value_list("ignore_values", ignore_values or ())
        if foreground is not None and not foreground:
            raise DollError("foreground_values must name at least one value (or be left out)")
        both = sorted(set(foreground or ()) & set(ignore))
        if both:
            raise DollError(f"values {both} are in both foreground_values and ignore_values")
        return cls(foreground, ignore)

    @property
    def ignores(self) -> bool:
        """Does the rule leave any value out (so samples carry ``mask_weight``)?"""
        return bool(self.ignore_values)

    def check_index_masks(self, reader: str = "") -> None:
        """:raises DollError: (prefixed ``reader: ``) when the rule names foreground values,
        which index masks do not take."""
        if self.foreground_values is not None:
            raise DollError(
                f"{reader + ': ' if reader else ''}foreground_values applies to binary masks; "
                "an index mask's classes are its values 1..K (set ignore_values for values "
                "to leave out)"
            )

    def _ignored(self, values: np.ndarray) -> np.ndarray:
        if not self.ignore_values:
            return np.zeros(values.shape, dtype=bool)
        return np.isin(values, self.ignore_values)

    def read(self, path: str | Path) -> MaskRead:
        """Read a binary mask file by this rule."""
        image = open_mask_file(Path(path))
        values = mask_values(image)
        ignored = self._ignored(values)
        if self.foreground_values is None:
            foreground = mask_from_image(image)
        else:
            foreground = np.isin(values, self.foreground_values)
        return MaskRead(foreground & ~ignored, ignored, value_counts(values))

    def read_index(self, path: str | Path, classes: int) -> tuple[np.ndarray, MaskRead]:
        """Read an index mask (value ``k`` in ``1..classes`` = class ``k``, 0 background,
        ``ignore_values`` left out): integer ``[H, W]`` values and the read, whose
        ``foreground`` is any class.

        :raises ImageReadError: when a value that is not ignored exceeds ``classes``, or
            the file has several channels.
        """
        self.check_index_masks()
        image = open_mask_file(Path(path))
        if image.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"):
            raise ImageReadError(path, "an index mask must have one channel, this one has several")
        values = mask_values(image) // (255 if image.mode == "1" else 1)
        ignored = self._ignored(values)
        kept = values[~ignored]
        if kept.size and int(kept.max()) > classes:
            raise ImageReadError(
                path,
                f"index mask holds value {int(kept.max())} but only {classes} classes are "
                "configured (name values to leave out with ignore_values)",
            )
        foreground = (values > 0) & ~ignored
        return values, MaskRead(foreground, ignored, value_counts(values))
