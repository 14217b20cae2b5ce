"""Reference inputs for path and difference methods (IG, DeepLift)."""

from __future__ import annotations

import math

import torch
from torchvision.transforms.functional import gaussian_blur

from doll_core.errors import DollError

BASELINES = ("zeros", "blurred", "uniform", "mean")
#: The ``blurred`` baseline's Gaussian sigma, as a share of the image side.
BLUR_SIGMA = 0.05


def check_baseline(kind: object) -> str | float:
    """``kind`` if :func:`make_baseline` takes it (a name of :data:`BASELINES` or a finite
    number), so that an explainer refuses a bad baseline when it is built, before any work.

    :raises DollError: naming the value and the choices.
    """
    if isinstance(kind, int | float) and not isinstance(kind, bool) and math.isfinite(kind):
        return kind
    if isinstance(kind, str) and kind in BASELINES:
        return kind
    raise DollError(
        f"unknown baseline {kind!r}; choose {', '.join(BASELINES)} or a (finite) number"
    )


def make_baseline(
    images: torch.Tensor, kind: str | float, *, blur_sigma: float = BLUR_SIGMA, seed: int = 0
) -> torch.Tensor:
    """A baseline like ``images [B, C, H, W]``.

    ``zeros`` (black), a number (that grey value), ``blurred`` (Gaussian blur with sigma =
    ``blur_sigma`` x image side: keeps the anatomy's brightness, removes detail), ``uniform``
    (uniform noise in [0, 1], seeded), ``mean`` (each image's mean grey value).
    """
    if isinstance(kind, int | float) and not isinstance(kind, bool):
        return torch.full_like(images, float(kind))
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images).clone()
    if kind == "uniform":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(images.shape, generator=generator).to(images)
    if kind == "blurred":
        sigma = max(blur_sigma * max(images.shape[-2:]), 0.1)
        size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(images.shape[-2:]) // 2) - 1)
        return gaussian_blur(images, kernel_size=[max(size, 1)] * 2, sigma=[sigma, sigma])
    raise DollError(f"unknown baseline {kind!r}; choose {', '.join(BASELINES)} or a number")
