"""Paired differences, their intervals, and the convergence figures, against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from doll_core.metrics.paired import (
    curve_area,
    first_step_reaching,
    paired_bootstrap_interval,
    paired_t_interval,
    t_quantile_975,
)
from doll_core.metrics.segmentation import SegmentationScores


def test_paired_t_interval_by_hand() -> None:
    result = paired_t_interval([1.5, 3.0, 4.5], [0.5, 1.0, 1.5])  # differences 1, 2, 3
    assert result["mean"] == pytest.approx(2.0)
    half = 4.303 * 1.0 / math.sqrt(3)  # t(2) x sd / sqrt(n)
    assert (result["low"], result["high"]) == pytest.approx((2 - half, 2 + half))
    single = paired_t_interval([0.7], [0.5])
    assert single["mean"] == pytest.approx(0.2) and single["low"] is None
    with pytest.raises(ValueError, match="equal"):
        paired_t_interval([1.0, 2.0], [1.0])


def test_t_quantiles() -> None:
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert t_quantile_975(60) == pytest.approx(2.000, abs=0.002)  # the table's 2.000
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=0.001)


def _sums(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[N, K, H, W]`` bool -> per-image ``[N, 2, K]`` intersection and union."""
    inter = (prediction & truth).sum(axis=(2, 3))
    union = (prediction | truth).sum(axis=(2, 3))
    return np.stack([inter, union], axis=1).astype(np.float64)


def test_the_bootstrap_difference_is_the_dataset_level_miou_difference() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((2, 5, 2, 6, 6)) > 0.5  # seeds, images, classes, H, W
    good = truth | (rng.random(truth.shape) > 0.9)
    poor = truth & (rng.random(truth.shape) > 0.4)
    arms = {}
    for name, prediction in (("good", good), ("poor", poor)):
        arms[name] = np.stack([_sums(prediction[s], truth[s]) for s in range(2)])
    expected = []
    for prediction in (good, poor):
        per_seed = []
        for s in range(2):
            scores = SegmentationScores(["a", "b"])
            scores.update(torch.from_numpy(prediction[s]), torch.from_numpy(truth[s]))
            per_seed.append(scores.summary()["miou"])
        expected.append(np.mean(per_seed))
    result = paired_bootstrap_interval(arms["good"], arms["poor"], resamples=500)
    assert result["mean"] == pytest.approx(expected[0] - expected[1])
    assert 0 < result["low"] < result["mean"] < result["high"]  # better on every image
    same = paired_bootstrap_interval(arms["good"], arms["good"], resamples=50)
    assert (same["mean"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="seeds, images"):
        paired_bootstrap_interval(arms["good"], arms["good"][:, :3])


def test_one_image_that_favours_the_other_arm_widens_the_interval() -> None:
    truth = np.ones((1, 4, 1, 2, 2), bool)
    treated = truth.copy()
    control = truth.copy()
    control[0, :3, 0, 0, 0] = False  # control misses a pixel on three images
    treated[0, 3] = False  # treated misses the whole of the fourth
    sums = {
        name: np.stack([_sums(arm[0], truth[0])])
        for name, arm in (("treated", treated), ("control", control))
    }
    result = paired_bootstrap_interval(sums["treated"], sums["control"], resamples=1000)
    # dataset-level IoU: treated 12/16, control 13/16
    assert result["mean"] == pytest.approx(12 / 16 - 13 / 16)
    assert result["low"] < 0 < result["high"]


def test_curve_area_and_first_step_reaching() -> None:
    curve = [
        {"step": 10, "val_miou": 0.2},
        {"step": 20, "val_miou": 0.6},
        {"step": 40, "val_miou": 0.6},
    ]
    # trapezoids: 10 x 0.4 + 20 x 0.6 = 16, over 30 steps
    assert curve_area(curve) == pytest.approx(16 / 30)
    assert curve_area(curve[:1]) == 0.2
    assert first_step_reaching(curve, 0.57) == 20
    assert first_step_reaching(curve, 0.7) is None
