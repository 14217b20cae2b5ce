"""Losses that respect label masks."""

from __future__ import annotations

import torch
from torch.nn import functional


def masked_bce_with_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy averaged over the labels that count.

    :param logits: ``[B, C]``. :param labels: ``[B, C]`` in ``{0, 1}`` (or soft).
    :param mask: ``[B, C]`` bool; False leaves that label out of the loss entirely.
    :param pos_weight: optional ``[C]`` weight of positive labels.
    :returns: scalar: the sum of the counted terms divided by their number (0 when none
        counts, with a gradient of zero).
    """
    terms = functional.binary_cross_entropy_with_logits(
        logits.float(), labels.float(), reduction="none", pos_weight=pos_weight
    )
    weight = mask.to(terms.dtype)
    return (terms * weight).sum() / weight.sum().clamp(min=1.0)
