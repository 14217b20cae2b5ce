"""Complexity: how concentrated a map is (Quantus' complexity category)."""

from __future__ import annotations

import torch

from doll_core.metrics.base import BatchMetric, MetricBatch, MetricCategory

#: Added to every |attribution| before the Gini index, as Quantus does (so that an
#: all-zero map has a defined, minimal sparseness).
GINI_EPSILON = 1e-7


class Sparseness(BatchMetric):
    """Gini index of the map's absolute values: 1 when one pixel holds all relevance, 0
    when all pixels hold the same."""

    category = MetricCategory.COMPLEXITY
    higher_is_better = True
    reference = "Chalasani et al., ICML 2020 (Quantus Sparseness)"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        values = batch.maps.flatten(2).abs().double() + GINI_EPSILON  # [B, T, P]
        ordered = torch.sort(values, dim=2).values
        count = ordered.shape[2]
        weights = 2 * torch.arange(1, count + 1, dtype=torch.float64, device=values.device)
        weights = weights - count - 1
        return (ordered * weights).sum(dim=2) / (count * ordered.sum(dim=2))


class Entropy(BatchMetric):
    """Shannon entropy (nats) of the map's absolute values normalised to sum to 1 (each
    pixel's fractional contribution); ``nan`` for an all-zero map."""

    category = MetricCategory.COMPLEXITY
    higher_is_better = False
    reference = "Bhatt et al., IJCAI 2020 (Quantus Complexity)"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        values = batch.maps.flatten(2).abs().double()
        total = values.sum(dim=2, keepdim=True)
        share = values / torch.where(total > 0, total, 1.0)
        terms = torch.where(share > 0, -share * torch.log(share.clamp(min=1e-300)), 0.0)
        return torch.where(total[..., 0] > 0, terms.sum(dim=2), torch.nan)
