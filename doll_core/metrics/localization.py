"""How well attribution maps localise ground-truth lesions.

Each metric is a small class in the manner of Quantus' ``Metric``: one override point,
:meth:`LocalizationMetric.score`, and metadata (``name``, ``higher_is_better``,
``needs_binary``). A score is ``nan`` where it is undefined (an empty ground-truth mask,
or an all-zero map for mass-based scores); averages skip ``nan``.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
from torch import nn

from doll_core.metrics.classification import auroc


class LocalizationMetric:
    """Base class: scores one map against one mask."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_binary: ClassVar[bool] = False

    def score(self, soft: torch.Tensor, mask: torch.Tensor, binary: torch.Tensor | None) -> float:
        """:param soft: ``[H, W]`` map (higher = more relevant). :param mask: bool ``[H, W]``
        ground truth. :param binary: bool ``[H, W]`` binarised map (for overlap metrics)."""
        raise NotImplementedError

    def __call__(
        self, soft: torch.Tensor, masks: torch.Tensor, binary: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of maps ``[N, H, W]`` against masks ``[N, H, W]``: float64 ``[N]``."""
        if self.needs_binary and binary is None:
            raise ValueError(f"{self.name} needs binarised maps")
        return torch.tensor(
            [
                self.score(soft[i], masks[i].bool(), None if binary is None else binary[i].bool())
                for i in range(soft.shape[0])
            ],
            dtype=torch.float64,
        )


class PointingGame(LocalizationMetric):
    """1 if the map's maximum lies inside the mask, else 0. Tied maxima (a clipped or
    binary map) count by the share of them inside the mask: the expected hit when the
    tie is broken at random, so that flat maps are not rewarded."""

    name = "pointing_game"

    def score(self, soft: torch.Tensor, mask: torch.Tensor, binary: torch.Tensor | None) -> float:
        if not mask.any():
            return math.nan
        if not bool((soft != 0).any()):
            return 0.0
        return float(mask[soft == soft.max()].float().mean())


class IoU(LocalizationMetric):
    """Intersection over union of the binarised map and the mask."""

    name = "iou"
    needs_binary = True

    def score(self, soft: torch.Tensor, mask: torch.Tensor, binary: torch.Tensor | None) -> float:
        assert binary is not None
        union = int((binary | mask).sum())
        if not mask.any():
            return math.nan
        return int((binary & mask).sum()) / union


class Dice(LocalizationMetric):
    """Dice coefficient (F1) of the binarised map and the mask."""

    name = "dice"
    needs_binary = True

    def score(self, soft: torch.Tensor, mask: torch.Tensor, binary: torch.Tensor | None) -> float:
        assert binary is not None
        if not mask.any():
            return math.nan
        return 2 * int((binary & mask).sum()) / (int(binary.sum()) + int(mask.sum()))


class TopKIntersection(LocalizationMetric):
    """Share of the map's top-k pixels inside the mask, k = the mask's size."""

    name = "top_k_intersection"

    def score(self, soft: torch.Tensor, mask: torch.Tensor, binary: torch.Tensor | None) -> float:
        k = int(mask.sum())
        if k == 0:
            return math.nan
        if not bool((soft != 0).any()):
            return 0.0
        top = torch.topk(soft.flatten(), k).indices
        return float(mask.flatten()[top].float().mean())


class RelevanceMassAccuracy(LocalizationMetric):
    """Share of the map's (positive) relevance that falls inside the mask (Arras et al.)."""

    name = "relevance_mass_accuracy"

    def score(self, soft: torch.Tensor, mask: torch.Tensor, binary: torch.Tensor | None) -> float:
        positive = soft.clamp(min=0)
        total = float(positive.sum())
        if not mask.any() or total == 0:
            return math.nan
        return float(positive[mask].sum()) / total


class PixelAUROC(LocalizationMetric):
    """AUROC of the map's values as a detector of the mask's pixels."""

    name = "pixel_auroc"

    def score(self, soft: torch.Tensor, mask: torch.Tensor, binary: torch.Tensor | None) -> float:
        return auroc(soft.flatten(), mask.flatten().float())


LOCALIZATION_METRICS: tuple[LocalizationMetric, ...] = (
    PointingGame(),
    IoU(),
    Dice(),
    TopKIntersection(),
    RelevanceMassAccuracy(),
    PixelAUROC(),
)


def nanmean(values: torch.Tensor) -> float:
    """Mean of the defined (non-nan) values; nan when there are none."""
    defined = values[~torch.isnan(values)]
    return float(defined.mean()) if defined.numel() else math.nan


def nanstd(values: torch.Tensor) -> float:
    """Sample standard deviation of the defined (non-nan) values; nan for fewer than two."""
    defined = values[~torch.isnan(values)].double()
    return float(defined.std()) if defined.numel() > 1 else math.nan


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two equally shaped tensors (ties by position)."""
    ra = torch.argsort(torch.argsort(a.flatten())).double()
    rb = torch.argsort(torch.argsort(b.flatten())).double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator else math.nan


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-initialised (``reset_parameters``) and
    BatchNorm statistics reset: the model-randomisation sanity check's control."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in clone.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        running = getattr(module, "reset_running_stats", None)
        if callable(running):
            running()
    return clone.eval()


def randomization_similarity(trained_maps: torch.Tensor, random_maps: torch.Tensor) -> float:
    """Mean Spearman correlation of |maps| of a trained and a randomised model
    ``[N, H, W]`` each (Adebayo et al.): high similarity means the explainer ignores what
    the model learned. Lower is better."""
    values = [spearman(a.abs(), b.abs()) for a, b in zip(trained_maps, random_maps, strict=True)]
    return nanmean(torch.tensor(values, dtype=torch.float64))
