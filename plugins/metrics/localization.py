"""Localization: how well a map points at the ground-truth mask of its target.

Every metric here reads the map's positive part (relevance *for* the target) and the mask
``bool [B, T, H, W]`` at the map's size; a score is ``nan`` where the mask is empty.
"""

from __future__ import annotations

import torch

from doll_core.attribution.postprocess import PostprocessConfig, postprocess
from doll_core.metrics.base import BatchMetric, MetricBatch, MetricCategory
from doll_core.metrics.similarity import average_ranks


def _positive(batch: MetricBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive maps [B, T, P] float64, masks [B, T, P] bool)``, flattened."""
    assert batch.masks is not None  # the core checked ``needs``
    maps = batch.maps.flatten(2).double().clamp(min=0)
    return maps, batch.masks.flatten(2).to(maps.device).bool()


def _where_defined(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks.any(dim=2), values, torch.nan)


class _Localization(BatchMetric):
    category = MetricCategory.LOCALIZATION
    higher_is_better = True
    needs = frozenset({"masks"})


class PointingGame(_Localization):
    """1 if the map's maximum lies inside the mask, else 0; tied maxima count by the share
    of them inside the mask (the expected hit of a random tie-break), an all-zero map 0."""

    reference = "Zhang et al., ECCV 2016"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        maps, masks = _positive(batch)
        peak = maps.amax(dim=2, keepdim=True)
        at_peak = (maps == peak) & (peak > 0)
        hits = (at_peak & masks).sum(dim=2) / at_peak.sum(dim=2).clamp(min=1)
        return _where_defined(hits.double(), masks)


class HitRate(_Localization):
    """1 if the mask holds the map's first maximum in row-major order (``np.argmax``),
    else 0: CheXlocalize's hit; its mean over maps is the hit rate."""

    reference = "Saporta et al., Nature Machine Intelligence 2022 (CheXlocalize)"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        assert batch.masks is not None
        maps = batch.maps.flatten(2).double()  # CheXlocalize takes the argmax of the raw map
        masks = batch.masks.flatten(2).to(maps.device).bool()
        first = maps.argmax(dim=2, keepdim=True)  # torch returns the first maximum
        return _where_defined(masks.gather(2, first)[..., 0].double(), masks)


class _Overlap(_Localization):
    """Overlap of the map's binarisation (positive part, clipped at its 99th percentile,
    Otsu's threshold: the label post-processing's defaults) with the mask; a subclass gives
    the score of the pixel counts in :meth:`overlap`."""

    def binary(self, batch: MetricBatch) -> torch.Tensor:
        post = postprocess(batch.maps, PostprocessConfig(binarize="otsu"), targets=batch.targets)
        assert post.binary is not None
        return post.binary.flatten(2)

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        _, masks = _positive(batch)
        binary = self.binary(batch).to(masks.device)
        both = (binary & masks).sum(dim=2)
        score = self.overlap(both, binary.sum(dim=2), masks.sum(dim=2))
        return _where_defined(score.double(), masks)

    def overlap(
        self, both: torch.Tensor, in_map: torch.Tensor, in_mask: torch.Tensor
    ) -> torch.Tensor:
        """The score ``[B, T]`` of pixel counts ``[B, T]``: in both the binarised map and
        the mask, in the map, in the mask."""
        raise NotImplementedError


class IoU(_Overlap):
    """Intersection over union of the map's Otsu binarisation (label post-processing
    defaults) and the mask."""

    reference = "Everingham et al., IJCV 2010"

    def overlap(
        self, both: torch.Tensor, in_map: torch.Tensor, in_mask: torch.Tensor
    ) -> torch.Tensor:
        return both / (in_map + in_mask - both).clamp(min=1)


class Dice(_Overlap):
    """Dice coefficient (F1) of the map's Otsu binarisation (label post-processing
    defaults) and the mask."""

    reference = "Dice, Ecology 1945"

    def overlap(
        self, both: torch.Tensor, in_map: torch.Tensor, in_mask: torch.Tensor
    ) -> torch.Tensor:
        return 2 * both / (in_map + in_mask).clamp(min=1)


def _share_of_top(maps: torch.Tensor, masks: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """float64 ``[B, T]``: the share of each map's ``k`` highest pixels (``k`` long
    ``[B, T]``, >= 1) that lie in its mask; ties by position (first pixels first)."""
    order = torch.sort(-maps, dim=2, stable=True).indices
    inside = torch.cumsum(masks.gather(2, order).double(), dim=2)  # [B, T, P]
    at_k = inside.gather(2, (k.clamp(min=1) - 1)[..., None])[..., 0]
    return at_k / k.clamp(min=1)


class RelevanceRankAccuracy(_Localization):
    """Share of the map's K highest pixels inside the mask, K = the mask's size."""

    reference = "Arras et al., Information Fusion 2022 (Quantus RelevanceRankAccuracy)"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        maps, masks = _positive(batch)
        share = _share_of_top(maps, masks, masks.sum(dim=2))
        flat = maps.amax(dim=2) == 0
        return _where_defined(torch.where(flat, 0.0, share), masks)


class TopKIntersection(_Localization):
    """Share of the map's ``k`` highest pixels inside the mask, for a fixed ``k``."""

    reference = "Theiner et al., WACV 2022 (Quantus TopKIntersection)"

    def __init__(self, k: int = 100) -> None:
        """:param k: pixels taken from the top of the map (at most all of them)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        maps, masks = _positive(batch)
        k = torch.full(maps.shape[:2], min(self.k, maps.shape[2]), device=maps.device)
        share = _share_of_top(maps, masks, k)
        flat = maps.amax(dim=2) == 0
        return _where_defined(torch.where(flat, 0.0, share), masks)


class RelevanceMassAccuracy(_Localization):
    """Share of the map's positive relevance that falls inside the mask; ``nan`` for a
    map without positive relevance."""

    reference = "Arras et al., Information Fusion 2022"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        maps, masks = _positive(batch)
        total = maps.sum(dim=2)
        inside = (maps * masks).sum(dim=2)
        return _where_defined(
            torch.where(total > 0, inside / total.clamp(min=1e-300), torch.nan), masks
        )


class PixelAUROC(_Localization):
    """AUROC of the map's values as a detector of the mask's pixels (ties count half);
    ``nan`` when the mask covers every pixel."""

    reference = "Fawcett, Pattern Recognition Letters 2006"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        maps, masks = _positive(batch)
        shape = maps.shape[:2]
        ranks = average_ranks(maps.flatten(0, 1)).view(*shape, -1)
        positives = masks.sum(dim=2).double()
        negatives = masks.shape[2] - positives
        rank_sum = (ranks * masks).sum(dim=2)
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives).clamp(min=1)
        return torch.where((positives > 0) & (negatives > 0), auc, torch.nan)
