"""Area under the ROC curve, with ties handled and labels masked per class."""

from __future__ import annotations

import math

import torch


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of ``scores [N]`` for binary ``labels [N]`` (1 = positive).

    The Mann-Whitney statistic with average ranks for ties: the probability that a random
    positive scores higher than a random negative, ties counting one half. ``nan`` when
    either class is absent (the AUROC is undefined then).
    """
    scores = scores.detach().double().flatten()
    positive = labels.detach().flatten() > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average the ranks of tied scores
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2
    ranks[order] = average[inverse]
    rank_sum = ranks[positive].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def masked_auroc_per_class(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> list[float]:
    """AUROC of each column of ``scores [N, C]`` against ``labels [N, C]``, counting only
    the rows where ``mask [N, C]`` is true; ``nan`` for a class without both labels."""
    return [auroc(scores[mask[:, c], c], labels[mask[:, c], c]) for c in range(scores.shape[1])]
