"""Calling fusion plugins with checked inputs and outputs, and the weights they get."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from doll_core.checkpoint import ClassifierMeta
from doll_core.errors import DollError, PluginError
from doll_core.observations import OBSERVATIONS


def validation_auroc(metas: Sequence[ClassifierMeta]) -> torch.Tensor:
    """float32 ``[N_clf, 14]``: each classifier's validation AUROC per observation (0.5,
    no skill, where it is unknown); indexed by targets it gives fusion weights."""
    return torch.tensor(
        [
            [
                value if (value := meta.val_auroc.get(name)) is not None else 0.5
                for name in OBSERVATIONS
            ]
            for meta in metas
        ],
        dtype=torch.float32,
    )


def fuse_maps(
    fusion: Any, name: str, maps: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Fuse ``maps [N_clf, B, T, H, W]`` (post-processed, in [0, 1]) with the plugin
    ``fusion``; ``weights [N_clf, B, T]`` optional. The inputs must all have gone through
    the same post-processing (values in [0, 1], finite); the result must be
    ``[B, T, H, W]``, finite and in [0, 1]."""
    if maps.dim() != 5:
        raise DollError(
            f"fusion {name!r}: maps must be [N_clf, B, T, H, W], got {list(maps.shape)}"
        )
    if not bool(torch.isfinite(maps).all()) or bool((maps < 0).any()) or bool((maps > 1).any()):
        raise DollError(
            f"fusion {name!r}: maps must be post-processed into [0, 1] (the same way for "
            "every classifier) before fusion"
        )
    if weights is not None and tuple(weights.shape) != tuple(maps.shape[:3]):
        raise DollError(
            f"fusion {name!r}: weights must be [N_clf, B, T] = {list(maps.shape[:3])}, "
            f"got {list(weights.shape)}"
        )
    fused = fusion.fuse(maps, weights)
    expected = tuple(maps.shape[1:])
    if not isinstance(fused, torch.Tensor) or tuple(fused.shape) != expected:
        shape = list(fused.shape) if isinstance(fused, torch.Tensor) else type(fused).__name__
        raise PluginError(f"fusion {name!r} returned {shape}, expected {list(expected)}")
    if (
        not bool(torch.isfinite(fused).all())
        or bool((fused < -1e-6).any())
        or bool((fused > 1 + 1e-6).any())
    ):
        raise PluginError(f"fusion {name!r} returned values outside [0, 1] or not finite")
    return fused.float().clamp(0, 1)
