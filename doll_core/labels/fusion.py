"""Calling fusion plugins with checked inputs and outputs, and the weights they get."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from doll_core.errors import DollError, PluginError
from doll_core.observations import OBSERVATIONS


def validation_auroc(aurocs: Sequence[Mapping[str, float | None]]) -> torch.Tensor:
    """float32 ``[N_clf, 14]``: each classifier's validation AUROC per observation, from
    ``{observation: AUROC}`` per classifier (a checkpoint's ``val_auroc``; 0.5, no skill,
    where it is unknown); indexed by targets it gives fusion weights."""
    return torch.tensor(
        [
            [value if (value := auroc.get(name)) is not None else 0.5 for name in OBSERVATIONS]
            for auroc in aurocs
        ],
        dtype=torch.float32,
    )


def fuse_maps(
    fusion: Any, name: str, maps: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Fuse ``maps`` with the fusion plugin ``fusion`` (named ``name``), checking both sides
    of the contract of :class:`doll_core.interfaces.Fusion`, where the shapes are stated:
    the maps (float32, post-processed alike, finite, in [0, 1]) and the weights (one per
    classifier and map, float32 on the maps' device, finite, in [0, 1]) before the call, and
    the result (shape ``maps.shape[1:]``, on the maps' device, finite, in [0, 1]) after.
    Returns the result as float32, clamped to [0, 1]."""
    if maps.dim() != 5:
        raise DollError(
            f"fusion {name!r}: maps must be [N_clf, B, T, H, W], got {list(maps.shape)}"
        )
    if maps.dtype != torch.float32:
        raise DollError(f"fusion {name!r}: maps must be torch.float32, got {maps.dtype}")
    if not bool(torch.isfinite(maps).all()) or bool((maps < 0).any()) or bool((maps > 1).any()):
        raise DollError(
            f"fusion {name!r}: maps must be post-processed into [0, 1] (the same way for "
            "every classifier) before fusion"
        )
    if weights is not None:
        _check_weights(name, maps, weights)
    fused = fusion.fuse(maps, weights)
    expected = tuple(maps.shape[1:])
    if not isinstance(fused, torch.Tensor) or tuple(fused.shape) != expected:
        shape = list(fused.shape) if isinstance(fused, torch.Tensor) else type(fused).__name__
        raise PluginError(f"fusion {name!r} returned {shape}, expected {list(expected)}")
    if fused.device != maps.device:
        raise PluginError(
            f"fusion {name!r} returned a tensor on {fused.device}, expected the maps' device "
            f"{maps.device}"
        )
    if (
        not bool(torch.isfinite(fused).all())
        or bool((fused < -1e-6).any())
        or bool((fused > 1 + 1e-6).any())
    ):
        raise PluginError(f"fusion {name!r} returned values outside [0, 1] or not finite")
    return fused.float().clamp(0, 1)


def _check_weights(name: str, maps: torch.Tensor, weights: torch.Tensor) -> None:
    """Weights ``[N_clf, B, T]`` (``maps.shape[:3]``), float32 like the maps and on their
    device, finite and in [0, 1] (validation AUROCs)."""
    if tuple(weights.shape) != tuple(maps.shape[:3]):
        raise DollError(
            f"fusion {name!r}: weights must be [N_clf, B, T] = {list(maps.shape[:3])}, "
            f"got {list(weights.shape)}"
        )
    if weights.dtype != maps.dtype or weights.device != maps.device:
        raise DollError(
            f"fusion {name!r}: weights must be {maps.dtype} on {maps.device} like the maps, "
            f"got {weights.dtype} on {weights.device}"
        )
    if (
        not bool(torch.isfinite(weights).all())
        or bool((weights < 0).any())
        or bool((weights > 1).any())
    ):
        raise DollError(f"fusion {name!r}: weights must be finite and in [0, 1]")
