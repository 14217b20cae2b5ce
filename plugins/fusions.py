"""Built-in fusions: merge the post-processed maps of several classifiers.

Every fusion takes ``maps [N_clf, B, T, H, W]`` with values in [0, 1] (all post-processed
alike) and optional ``weights [N_clf, B, T]`` and returns ``[B, T, H, W]`` in [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch

from doll_core import hookimpl
from doll_core.errors import DollError


class Mean:
    """Mean of the classifiers' maps (PSSL's ensemble average)."""

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return maps.mean(dim=0)


class Max:
    """Pixel-wise maximum: a region any classifier points at."""

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return maps.amax(dim=0)


class AucWeighted:
    """Mean weighted by each classifier's validation AUROC for the observation, above a floor.

    A classifier at chance (AUROC 0.5) gets weight 0 by default: its explanation carries
    no information about the finding.
    """

    def __init__(self, floor: float = 0.5) -> None:
        """:param floor: AUROC that counts as no skill; weights are ``max(auc - floor, 0)``."""
        self.floor = floor

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is None:
            raise DollError("auc_weighted needs each classifier's validation AUROC (weights)")
        skill = (weights.to(maps) - self.floor).clamp(min=0)  # [N, B, T]
        total = skill.sum(dim=0)  # [B, T]
        fused = (skill[..., None, None] * maps).sum(dim=0) / total.clamp(min=1e-12)[..., None, None]
        # no classifier has skill for this observation: fall back to the plain mean
        return torch.where((total > 0)[..., None, None], fused, maps.mean(dim=0))


class Vote:
    """Majority vote of the binarised maps (1 where more than half exceed ``threshold``)."""

    def __init__(self, threshold: float = 0.5, quorum: float = 0.5) -> None:
        """:param threshold: binarisation of each map. :param quorum: share of classifiers
        that must agree (strictly more than it)."""
        self.threshold, self.quorum = threshold, quorum

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        votes = (maps >= self.threshold).float().mean(dim=0)
        return (votes > self.quorum).float()


class GeometricMean:
    """Geometric mean: high only where all classifiers agree."""

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return maps.clamp(min=0).log().mean(dim=0).exp()


@hookimpl
def doll_register_fusions(register: Any) -> None:
    register("mean", Mean)
    register("max", Max)
    register("auc_weighted", AucWeighted, needs="validation AUROC per classifier")
    register("vote", Vote)
    register("geometric_mean", GeometricMean)
