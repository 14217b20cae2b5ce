"""IoU and Dice of segmentation masks, accumulated over a dataset.

Rule for absent classes: intersections, unions and sizes are summed over all images of
the split before dividing, per class. An image where a class is absent from both the
prediction and the truth adds nothing; a false positive on an image without the class
enlarges the union. A class absent from the whole split (empty truth and prediction) has
no score (nan) and is left out of the means. Pixels of weight 0 (a reader's
``ignore_values``) count in no sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from doll_core.errors import DollError


@dataclass
class SegmentationScores:
    """Running sums per class; :meth:`update` with each batch, then read the scores."""

    classes: list[str]
    #: per image (when :meth:`update` is given ids): ``(id, intersection [K], union [K])``
    images: list[tuple[str, list[float], list[float]]] = field(init=False)
    intersection: torch.Tensor = field(init=False)
    union: torch.Tensor = field(init=False)
    predicted: torch.Tensor = field(init=False)
    truth: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        zeros = torch.zeros(len(self.classes), dtype=torch.float64)
        self.intersection, self.union = zeros.clone(), zeros.clone()
        self.predicted, self.truth = zeros.clone(), zeros.clone()
        self.images = []

    def update(
        self,
        prediction: torch.Tensor,
        truth: torch.Tensor,
        weight: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
    ) -> None:
        """:param prediction: / :param truth: bool ``[B, K, H, W]``, K = ``len(classes)``.
        :param weight: ``[B, K, H, W]``; pixels where it is 0 are left out (default: none).
        :param ids: the B images' ids, to keep their own sums in :attr:`images` (for
            bootstrap intervals over images; default: not kept).

        :raises DollError: when the shapes differ or are not that: broadcasting one
            against the other would give scores of the wrong pixels or classes.
        """
        expected = f"[B, K={len(self.classes)}, H, W]"
        for name, tensor in (("prediction", prediction), ("truth", truth)):
            if tensor.dim() != 4 or tensor.shape[1] != len(self.classes):
                raise DollError(
                    f"segmentation scores: {name} has shape {list(tensor.shape)}, "
                    f"expected {expected} for classes {self.classes}"
                )
        if prediction.shape != truth.shape:
            raise DollError(
                f"segmentation scores: prediction {list(prediction.shape)} and truth "
                f"{list(truth.shape)} differ in shape"
            )
        p, t = prediction.bool(), truth.bool()
        if weight is not None:
            if weight.shape != truth.shape:
                raise DollError(
                    f"segmentation scores: weight {list(weight.shape)} and truth "
                    f"{list(truth.shape)} differ in shape"
                )
            kept = weight > 0
            p, t = p & kept, t & kept
        per_intersection = (p & t).sum(dim=(2, 3)).double().cpu()
        per_union = (p | t).sum(dim=(2, 3)).double().cpu()
        if ids is not None:
            if len(ids) != p.shape[0]:
                raise DollError(f"segmentation scores: {len(ids)} ids for {p.shape[0]} images")
            for index, image_id in enumerate(ids):
                sums = (per_intersection[index].tolist(), per_union[index].tolist())
                self.images.append((str(image_id), *sums))
        dims = (0, 2, 3)
        self.intersection += per_intersection.sum(dim=0)
        self.union += per_union.sum(dim=0)
        self.predicted += p.sum(dim=dims).double().cpu()
        self.truth += t.sum(dim=dims).double().cpu()

    def merge(self, other: SegmentationScores) -> None:
        for name in ("intersection", "union", "predicted", "truth"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.images += other.images

    def per_image(self) -> dict[str, list[Any]]:
        """The kept per-image sums, sorted by id: ``ids``, ``intersection`` and ``union``
        (``[N][K]`` pixel counts), what :func:`doll_core.metrics.paired.paired_bootstrap_interval`
        resamples."""
        ordered = sorted(self.images)
        return {
            "ids": [image_id for image_id, _, _ in ordered],
            "intersection": [i for _, i, _ in ordered],
            "union": [u for _, _, u in ordered],
        }

    def iou(self) -> list[float]:
        return [
            float(i / u) if u > 0 else math.nan
            for i, u in zip(self.intersection, self.union, strict=True)
        ]

    def dice(self) -> list[float]:
        return [
            float(2 * i / (p + t)) if p + t > 0 else math.nan
            for i, p, t in zip(self.intersection, self.predicted, self.truth, strict=True)
        ]

    def summary(self) -> dict[str, object]:
        iou, dice = self.iou(), self.dice()
        defined_iou = [v for v in iou if not math.isnan(v)]
        defined_dice = [v for v in dice if not math.isnan(v)]
        return {
            "miou": sum(defined_iou) / len(defined_iou) if defined_iou else math.nan,
            "mdice": sum(defined_dice) / len(defined_dice) if defined_dice else math.nan,
            "iou": {
                c: (None if math.isnan(v) else round(v, 6))
                for c, v in zip(self.classes, iou, strict=True)
            },
            "dice": {
                c: (None if math.isnan(v) else round(v, 6))
                for c, v in zip(self.classes, dice, strict=True)
            },
        }
