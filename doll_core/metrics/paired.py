"""Paired comparisons of two initialisations: differences with 95% intervals, and the
convergence figures of validation curves.

Two arms are *paired* when run ``s`` of one and run ``s`` of the other share their seed,
hence their labelled subset, data order and test images. Two intervals are offered:

- :func:`paired_t_interval` over seeds: the spread of the per-seed differences, with
  Student's t quantile (only seeds vary; with few seeds it is wide, as it should be);
- :func:`paired_bootstrap_interval` over seeds *and* test images: seeds and images are
  resampled with replacement, the same draw for both arms, and each resample's mIoU is
  computed from its summed intersections and unions (the dataset-level rule of
  :mod:`doll_core.metrics.segmentation`), so a test set of few images widens it.

With few seeds the bootstrap understates the seeds' spread (two seeds give three distinct
draws) while the t interval, which sees only the seeds, ignores the test images' spread:
a difference is clear when both intervals exclude zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Student's t 0.975 quantiles for 1..30 degrees of freedom (beyond: the normal's 1.96
#: would be off by < 2%, so 31..120 interpolate to it).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile for ``df`` >= 1 degrees of freedom (3 decimals)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.96 + (_T975[-1] - 1.96) * 30 / df  # t_df - z ~ c / df


def paired_t_interval(treated: Sequence[float], control: Sequence[float]) -> dict[str, Any]:
    """Mean of ``treated[s] - control[s]`` over the seeds ``s`` and its 95% paired t
    interval (``low``/``high`` are ``None`` with one seed).

    :raises ValueError: when the two arms have different numbers of seeds.
    """
    if len(treated) != len(control) or not treated:
        raise ValueError(f"paired arms need equal, non-zero seeds: {len(treated)}, {len(control)}")
    differences = [a - b for a, b in zip(treated, control, strict=True)]
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return {"mean": mean, "low": None, "high": None, "seeds": 1, "method": "paired t"}
    half = t_quantile_975(len(differences) - 1) * statistics.stdev(differences)
    half /= math.sqrt(len(differences))
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "seeds": len(differences),
        "method": "paired t over seeds",
    }


def _miou_of(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Mean over classes with a union of ``I / U`` summed over images: ``[..., N, K]`` sums
    -> ``[...]`` (nan where no class has a union)."""
    total_i, total_u = intersection.sum(axis=-2), union.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(total_u > 0, total_i / np.where(total_u > 0, total_u, 1), np.nan)
    defined = ~np.isnan(iou)
    counts = defined.sum(axis=-1)
    sums = np.where(defined, iou, 0).sum(axis=-1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def paired_bootstrap_interval(
    treated: np.ndarray,
    control: np.ndarray,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The mIoU difference of two arms and its 95% percentile interval, resampling seeds
    and test images together.

    :param treated: / :param control: per-image sums ``[S, N, 2, K]``: seeds, test images
        (the same images in the same order in both arms), intersection and union, classes.
    :param resamples: bootstrap replicates (default 2000).
    :param seed: of the resampling generator (default 0).
    :raises ValueError: when the arms' shapes differ or are not ``[S, N, 2, K]``.
    """
    if treated.shape != control.shape or treated.ndim != 4 or treated.shape[2] != 2:
        raise ValueError(
            f"paired arms need equal [seeds, images, 2, classes] sums: "
            f"{list(treated.shape)}, {list(control.shape)}"
        )
    seeds, images = treated.shape[:2]

    def miou(arm: np.ndarray) -> np.ndarray:  # [..., S, N, 2, K] -> [...] mean over seeds
        return np.nanmean(_miou_of(arm[..., 0, :], arm[..., 1, :]), axis=-1)

    observed = float(miou(treated) - miou(control))
    generator = np.random.default_rng(seed)
    replicates = np.empty(resamples)
    for index in range(resamples):
        s = generator.integers(0, seeds, seeds)
        n = generator.integers(0, images, images)
        replicates[index] = miou(treated[s][:, n]) - miou(control[s][:, n])
    low, high = np.nanpercentile(replicates, [2.5, 97.5])
    return {
        "mean": observed,
        "low": float(low),
        "high": float(high),
        "seeds": seeds,
        "images": images,
        "resamples": resamples,
        "method": "paired bootstrap over seeds and test images",
    }


def curve_area(curve: Sequence[dict[str, Any]], key: str = "val_miou") -> float:
    """The area under a validation curve (``[{"step", key}, ...]``) by the trapezoid rule,
    divided by its span of steps: the curve's mean height, 1.0 for a run at 1.0 from its
    first evaluation. A single point is its own height; an empty curve has none (nan)."""
    if not curve:
        return math.nan
    steps = [float(point["step"]) for point in curve]
    values = [float(point[key]) for point in curve]
    if len(curve) == 1:
        return values[0]
    area = sum(
        (steps[i + 1] - steps[i]) * (values[i + 1] + values[i]) / 2 for i in range(len(steps) - 1)
    )
    return area / (steps[-1] - steps[0])


def best_validation(curve: Sequence[dict[str, Any]], key: str = "val_miou") -> float:
    """The highest score of a validation curve (nan for an empty one)."""
    return max((float(point[key]) for point in curve), default=math.nan)


def first_step_reaching(
    curve: Sequence[dict[str, Any]], target: float, key: str = "val_miou"
) -> int | None:
    """The first step at which ``curve`` reaches ``target``; ``None`` if it never does."""
    for point in curve:
        if float(point[key]) >= target:
            return int(point["step"])
    return None
