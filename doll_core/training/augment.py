"""Batch augmentation for radiographs, on whatever device the batch is on.

Parameters are drawn from an explicit ``torch.Generator`` (CPU), so a run's augmentation
is reproducible and its state can be saved and restored with the rest of a checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from doll_core.training.config import AugmentConfig


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """A randomly transformed copy of ``images [B, C, H, W]`` in ``[0, 1]``: rotation,
    translation and scaling (borders replicated), optional horizontal flip, brightness
    and contrast. Returns the input unchanged when augmentation is disabled."""
    if not config.enabled:
        return images
    batch = images.shape[0]
    angle = (
        _uniform(generator, batch, -config.rotate_degrees, config.rotate_degrees) * math.pi / 180
    )
    scale = _uniform(generator, batch, *config.scale)
    shift = _uniform(generator, 2 * batch, -config.translate, config.translate).view(batch, 2) * 2
    flip = (
        (torch.rand(batch, generator=generator) < 0.5)
        if config.hflip
        else torch.zeros(batch, dtype=torch.bool)
    )
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * sign, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    ).to(images.device, images.dtype)
    grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
    moved = functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    contrast = _uniform(generator, batch, 1 - config.contrast, 1 + config.contrast)
    brightness = _uniform(generator, batch, -config.brightness, config.brightness)
    contrast = contrast.to(images.device, images.dtype).view(-1, 1, 1, 1)
    brightness = brightness.to(images.device, images.dtype).view(-1, 1, 1, 1)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    return ((moved - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
