"""Which observations of each image to explain (a core concern, not each explainer's)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS

TARGET_MODES = ("positive", "predicted", "all")


def pack_targets(chosen: torch.Tensor) -> torch.Tensor:
    """``bool [B, K]`` choices -> ``long [B, T]`` observation indices, left-packed and
    padded with -1, ``T`` = the largest count (at least 1)."""
    counts = chosen.sum(dim=1)
    width = max(int(counts.max()) if chosen.numel() else 0, 1)
    targets = torch.full((chosen.shape[0], width), -1, dtype=torch.long)
    for b in range(chosen.shape[0]):
        indices = torch.nonzero(chosen[b], as_tuple=False).flatten()
        targets[b, : len(indices)] = indices
    return targets


def select_targets(
    mode: str,
    *,
    labels: torch.Tensor | None = None,
    label_mask: torch.Tensor | None = None,
    probabilities: torch.Tensor | None = None,
    threshold: float = 0.5,
    exclude: Sequence[str] = ("No Finding",),
) -> torch.Tensor:
    """Targets ``long [B, T]`` (-1 padded) for a batch.

    :param mode: ``positive``: labels that are 1 and count (the reader's uncertainty
        policy has already turned -1 into 1, 0 or "does not count"); ``predicted``:
        probability >= ``threshold``; ``all``: every observation.
    :param labels: / :param label_mask: ``[B, 14]`` from a dataset reader (``positive``).
    :param probabilities: ``[B, 14]`` sigmoid outputs (``predicted``).
    :param exclude: observations never explained (default: No Finding, which has no
        lesion to localise).
    """
    if mode not in TARGET_MODES:
        raise DollError(f"target mode must be one of {', '.join(TARGET_MODES)}, got {mode!r}")
    unknown = [name for name in exclude if name not in OBSERVATIONS]
    if unknown:
        raise DollError(f"exclude names unknown observations {unknown}")
    if mode == "positive":
        if labels is None:
            raise DollError("target mode 'positive' needs labels")
        chosen = labels >= 0.5
        if label_mask is not None:
            chosen &= label_mask.bool()
    elif mode == "predicted":
        if probabilities is None:
            raise DollError("target mode 'predicted' needs probabilities")
        chosen = probabilities >= threshold
    else:
        reference = labels if labels is not None else probabilities
        batch = reference.shape[0] if reference is not None else 1
        chosen = torch.ones(batch, len(OBSERVATIONS), dtype=torch.bool)
    chosen = chosen.cpu().clone()
    for name in exclude:
        chosen[:, OBSERVATIONS.index(name)] = False
    return pack_targets(chosen)
