"""Segmentation losses with per-pixel weights."""

from __future__ import annotations

import torch
from torch.nn import functional


def weighted_bce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE over ``[B, K, H, W]`` averaged with per-pixel ``weight`` (default 1)."""
    terms = functional.binary_cross_entropy_with_logits(
        logits.float(), target.float(), reduction="none"
    )
    if weight is None:
        return terms.mean()
    return (terms * weight).sum() / weight.sum().clamp(min=1e-12)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 - soft Dice per class and image, averaged (``[B, K, H, W]``); pixels of
    ``weight`` 0 (``[B, K, H, W]``, default all 1) are left out of both sums."""
    probabilities = torch.sigmoid(logits.float())
    if weight is not None:
        probabilities, target = probabilities * weight, target * weight
    dims = (2, 3)
    intersection = (probabilities * target).sum(dims)
    total = probabilities.sum(dims) + target.sum(dims)
    return (1 - (2 * intersection + eps) / (total + eps)).mean()
