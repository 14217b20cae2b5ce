"""The common type of localization ground truth: per image id and observation, a mask.

A :class:`GroundTruth` holds, per image id, the image's native size ``(H, W)`` and, per
observation name (one of the 14 CheXpert observations, or a source's own name for a
finding without one; see :mod:`doll_core.groundtruth.names`), the parts of its mask:
polygons, boxes, RLEs, each decoded only when :meth:`GroundTruth.mask` asks for it.
``covered`` lists the observations the source annotates: for those, an image with no
part has an empty mask (the finding is absent); any other observation is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from doll_core.errors import DollError, GroundTruthError

#: Draws one part of a mask: ``() -> bool [H, W]`` at the image's native size.
MaskPart = Callable[[], np.ndarray]


@dataclass
class ImageTruth:
    """One image: its native ``size`` ``(H, W)`` (``None`` when its entry records none,
    as in a segmentations file listing no mask for it) and its mask parts per
    observation."""

    size: tuple[int, int] | None
    parts: dict[str, list[MaskPart]] = field(default_factory=dict)

    def add(self, observation: str, part: MaskPart) -> None:
        self.parts.setdefault(observation, []).append(part)


class GroundTruth:
    """Localization ground truth read from one file (``source``, e.g.
    ``chexlocalize:gt.json``): see the module docstring."""

    def __init__(
        self,
        source: str,
        images: Mapping[str, ImageTruth],
        covered: Iterable[str],
        *,
        form: str = "",
    ) -> None:
        """:param form: what the file held (``"polygons"``, ``"rle"``, ``"boxes"``, ...)."""
        self.source = source
        self.form = form
        self._images = dict(images)
        self.covered: tuple[str, ...] = tuple(dict.fromkeys(covered))

    def __repr__(self) -> str:
        return f"GroundTruth({self.source!r}, {len(self._images)} images, {self.form})"

    @property
    def ids(self) -> list[str]:
        """The image ids, in the file's order."""
        return list(self._images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images

    def __len__(self) -> int:
        return len(self._images)

    def covers(self, observation: str) -> bool:
        return observation in self.covered

    def _image(self, image_id: str) -> ImageTruth:
        try:
            return self._images[image_id]
        except KeyError:
            raise DollError(f"{self.source}: no image {image_id!r}") from None

    def size(self, image_id: str) -> tuple[int, int] | None:
        """``(H, W)`` of ``image_id``; ``None`` when its entry records no size."""
        return self._image(image_id).size

    def annotated(self, image_id: str) -> list[str]:
        """The observations with at least one part for ``image_id`` (a part may still be
        empty, as an RLE of zeros is)."""
        return list(self._image(image_id).parts)

    def mask(self, image_id: str, observation: str) -> np.ndarray:
        """bool ``[H, W]``: the union of ``observation``'s parts for ``image_id``; all
        false for a covered observation without parts.

        :raises DollError: for an unknown image, an observation the source does not
            cover, an image without a size; :class:`GroundTruthError` for a part that does
            not decode or is not ``[H, W]``.
        """
        image = self._image(image_id)
        parts = image.parts.get(observation, [])
        if not parts and not self.covers(observation):
            raise DollError(f"{self.source}: does not annotate {observation!r}")
        if image.size is None:
            raise DollError(f"{self.source}: image {image_id!r} records no size")
        mask = np.zeros(image.size, dtype=bool)
        for part in parts:
            try:
                drawn = part()
            except GroundTruthError:
                raise
            except DollError as exc:
                raise GroundTruthError(str(exc)) from None
            if drawn.shape != image.size:
                raise GroundTruthError(
                    f"{self.source}: {image_id!r} {observation!r}: a mask of "
                    f"{list(drawn.shape)}, the image is {list(image.size)} (H, W)"
                )
            mask |= drawn
        return mask

    def positives(self, image_id: str) -> list[str]:
        """The observations whose mask for ``image_id`` is not empty (decodes them)."""
        return [name for name in self.annotated(image_id) if self.mask(image_id, name).any()]
