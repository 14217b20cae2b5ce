"""Batched similarity of maps, row by row: average ranks, Pearson and Spearman
correlation, and SSIM as scikit-image computes it.

Every function takes ``[N, ...]`` tensors and returns one value per row ``[N]`` (float64),
``nan`` where the value is undefined (a constant row).
"""

from __future__ import annotations

import torch
from torch.nn import functional


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """float64 ``[N, P]``: the rank (1 … P) of each entry within its row of ``values``
    ``[N, ...]`` (flattened), tied entries sharing the mean of their ranks, as
    ``scipy.stats.rankdata(method="average")`` gives."""
    flat = values.flatten(1).double()
    rows, width = flat.shape
    ordered, order = torch.sort(flat, dim=1, stable=True)
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = torch.cumsum(new_group.long(), dim=1) - 1  # [N, P] group id within its row
    group = group + torch.arange(rows, device=flat.device)[:, None] * width  # unique per row
    position = torch.arange(1, width + 1, dtype=torch.float64, device=flat.device).expand(
        rows, width
    )
    sums = torch.zeros(rows * width, dtype=torch.float64, device=flat.device)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, group.flatten(), position.flatten())
    counts.index_add_(0, group.flatten(), torch.ones_like(position).flatten())
    mean_rank = (sums / counts.clamp(min=1))[group]
    ranks = torch.empty_like(mean_rank)
    ranks.scatter_(1, order, mean_rank)
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float64 ``[N]``: Pearson correlation of each row of ``a`` and ``b`` ``[N, ...]``;
    ``nan`` where a row is constant."""
    x, y = a.flatten(1).double(), b.flatten(1).double()
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    denominator = x.norm(dim=1) * y.norm(dim=1)
    numerator = (x * y).sum(dim=1)
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), torch.nan)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float64 ``[N]``: Spearman rank correlation of each row of ``a`` and ``b``, ties by
    average rank (``scipy.stats.spearmanr``); ``nan`` where a row is constant."""
    return pearson(average_ranks(a), average_ranks(b))


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    data_range: torch.Tensor | float | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """float64 ``[N]``: structural similarity of each pair of maps ``[N, H, W]``, as
    ``skimage.metrics.structural_similarity`` computes it by default: a uniform
    ``win_size`` window, sample covariances (``N / (N - 1)``), and the mean SSIM over the
    pixels at least ``(win_size - 1) / 2`` from the border.

    :param data_range: the maps' value range, per row ``[N]`` or one number; default
        ``max - min`` of both maps of the row together (scikit-image requires one for
        floating-point maps; this is the range Quantus passes).
    """
    x = a.double()[:, None]
    y = b.double()[:, None]
    rows = x.shape[0]
    if data_range is None:
        both = torch.cat([x.flatten(1), y.flatten(1)], dim=1)
        data_range = both.max(dim=1).values - both.min(dim=1).values
    span = torch.as_tensor(data_range, dtype=torch.float64, device=x.device).expand(rows)
    kernel = torch.full(
        (1, 1, win_size, win_size), 1.0 / win_size**2, dtype=torch.float64, device=x.device
    )
    covariance_norm = win_size**2 / (win_size**2 - 1)

    def mean(z: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(z, kernel)

    ux, uy = mean(x), mean(y)
    vx = covariance_norm * (mean(x * x) - ux * ux)
    vy = covariance_norm * (mean(y * y) - uy * uy)
    vxy = covariance_norm * (mean(x * y) - ux * uy)
    c1 = ((k1 * span) ** 2)[:, None, None, None]
    c2 = ((k2 * span) ** 2)[:, None, None, None]
    numerator = (2 * ux * uy + c1) * (2 * vxy + c2)
    denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return (numerator / denominator).flatten(1).mean(dim=1)
