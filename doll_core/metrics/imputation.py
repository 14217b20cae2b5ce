"""Noisy linear imputation (Rong et al., "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML 2022), batched: removed pixels are filled so that each is
the weighted mean of its eight neighbours (weight 1/6 for the four direct ones, 1/12 for
the diagonals, neighbours outside the image left out), then Gaussian noise is added.

The linear system is the one of the authors' ``road_evaluation`` and of Quantus'
``noisy_linear_imputation``: for every removed pixel ``i`` with in-image neighbours
``N(i)``, ``(Σ_{j ∈ N(i)} w_j) x_i - Σ_{j ∈ N(i) removed} w_j x_j = Σ_{j ∈ N(i) kept} w_j
x_j``. It is symmetric and positive definite whenever every connected region of removed
pixels touches a kept one, and is solved here for all images at once by conjugate
gradients on shifted sums of neighbours (no sparse matrix, no per-image loop).
"""

from __future__ import annotations

import torch
from torch.nn import functional

#: Neighbour weights: 1/6 for the four direct neighbours, 1/12 for the diagonals.
NEIGHBOUR_KERNEL = torch.tensor(
    [[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]],
    dtype=torch.float64,
)


def _neighbour_sum(values: torch.Tensor) -> torch.Tensor:
    """``Σ_j w_j values_j`` over each pixel's in-image neighbours, ``[R, 1, H, W]`` (eight
    shifted adds: four times faster than a float64 ``conv2d`` on the CPU)."""
    padded = functional.pad(values, (1, 1, 1, 1))
    direct = (
        padded[..., :-2, 1:-1]
        + padded[..., 2:, 1:-1]
        + padded[..., 1:-1, :-2]
        + padded[..., 1:-1, 2:]
    )
    diagonal = (
        padded[..., :-2, :-2] + padded[..., :-2, 2:] + padded[..., 2:, :-2] + padded[..., 2:, 2:]
    )
    return direct * NEIGHBOUR_KERNEL[0, 1] + diagonal * NEIGHBOUR_KERNEL[0, 0]


def linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    *,
    tolerance: float = 1e-6,
    max_iterations: int = 2000,
) -> torch.Tensor:
    """float64 ``[R, C, H, W]``: ``images`` with the ``removed`` pixels (bool
    ``[R, 1, H, W]`` or ``[R, C, H, W]``) replaced by the solution of the linear system
    (module docstring), each channel on its own.

    :param tolerance: stop a system when its residual norm is below ``tolerance`` times
        its right-hand side's norm (1e-6 leaves the imputed values within about 1e-5 of
        the exact solution, far below ROAD's noise of 0.01).
    :param max_iterations: cap on conjugate-gradient steps.
    """
    rows, channels, height, width = images.shape
    values = images.double().reshape(rows * channels, 1, height, width)
    unknown = removed.expand(rows, channels, height, width).reshape(values.shape).double()
    known = 1.0 - unknown
    in_image_weight = _neighbour_sum(torch.ones_like(values[:1]))  # [1, 1, H, W]
    solution = torch.zeros_like(values)
    # the systems still iterating: their index, unknowns, iterate, residual and direction
    active = torch.arange(values.shape[0], device=values.device)
    mask = unknown
    residual = unknown * _neighbour_sum(values * known)
    x = torch.zeros_like(values)
    direction = residual.clone()
    squared = residual.flatten(1).pow(2).sum(dim=1)
    limit = (tolerance**2) * squared.clamp(min=1e-300)
    for _ in range(max_iterations):
        going = squared > limit
        if not bool(going.all()):  # write back the converged systems and drop them
            solution[active[~going]] = x[~going]
            active, mask, x = active[going], mask[going], x[going]
            residual, direction = residual[going], direction[going]
            squared, limit = squared[going], limit[going]
            if active.numel() == 0:
                break
        applied = mask * (in_image_weight * direction - _neighbour_sum(direction * mask))
        curvature = (direction * applied).flatten(1).sum(dim=1)
        step = torch.where(curvature > 0, squared / curvature.clamp(min=1e-300), 0.0)
        step = step[:, None, None, None]
        x = x + step * direction
        residual = residual - step * applied
        new_squared = residual.flatten(1).pow(2).sum(dim=1)
        ratio = (new_squared / squared.clamp(min=1e-300))[:, None, None, None]
        direction = residual + ratio * direction
        squared = new_squared
    solution[active] = x
    filled = values * known + solution * unknown
    return filled.view(rows, channels, height, width)


def noisy_linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`linear_imputation` plus Gaussian noise of standard deviation ``noise`` on the
    imputed pixels only; ``[R, C, H, W]`` in ``images``' dtype."""
    filled = linear_imputation(images, removed)
    if noise > 0:
        draw = torch.randn(filled.shape, generator=generator, dtype=torch.float64)
        filled = filled + noise * draw.to(filled.device) * removed.expand_as(filled).double()
    return filled.to(images.dtype)
