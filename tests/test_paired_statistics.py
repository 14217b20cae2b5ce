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
    assert math.isnan(curve_area([]))  # a stage not run yet (doctor's plan)
    assert first_step_reaching(curve, 0.57) == 20
    assert first_step_reaching(curve, 0.7) is None


def _run(init: str, seed: int, miou: float, curve: list[float], images: list[float]) -> dict:
    """A fine-tuning row as the runner makes it: one class, per-image IoU ``images``
    (intersection = IoU x 10, union 10)."""
    return {
        "task": "organs",
        "init": init,
        "budget": 8,
        "seed": seed,
        "train_images": 8,
        "test_miou": miou,
        "test_mdice": miou,
        "curve": [{"step": 10 * (i + 1), "val_miou": v} for i, v in enumerate(curve)],
        "test_per_image": {
            "ids": [f"i{k}" for k in range(len(images))],
            "intersection": [[10 * v] for v in images],
            "union": [[10.0] for _ in images],
        },
    }


def test_paired_comparisons_and_convergence_of_runs() -> None:
    from doll_core.experiment.report import results_markdown, rich_table
    from doll_core.segmentation.compare import paired_comparisons, summarise_runs

    runs = [
        _run("random", 0, 0.50, [0.2, 0.4, 0.6], [0.4, 0.6]),
        _run("random", 1, 0.60, [0.2, 0.5, 0.8], [0.5, 0.7]),
        _run("doll", 0, 0.70, [0.6, 0.7, 0.7], [0.6, 0.8]),
        _run("doll", 1, 0.75, [0.3, 0.7, 0.8], [0.7, 0.8]),
    ]
    [comparison] = paired_comparisons(runs, ("task", "budget"), resamples=200)
    assert (comparison["treated"], comparison["control"], comparison["seeds"]) == (
        "doll",
        "random",
        2,
    )
    assert comparison["t"]["mean"] == pytest.approx(0.175)  # (0.20 + 0.15) / 2
    # dataset-level mIoU from the image sums: doll (0.7 + 0.75) / 2, random (0.5 + 0.6) / 2
    assert comparison["bootstrap"]["mean"] == pytest.approx(0.725 - 0.55)
    summary = {row["init"]: row for row in summarise_runs(runs, ("task", "init", "budget"))}
    # targets: 0.95 x 0.6 = 0.57 (seed 0), 0.95 x 0.8 = 0.76 (seed 1)
    assert summary["doll"]["steps_to_target"] == pytest.approx((10 + 30) / 2)
    assert summary["random"]["steps_to_target"] == pytest.approx(30)
    assert summary["doll"]["reached_target"] == 2
    assert summary["doll"]["val_curve_area"] == pytest.approx(
        (((0.6 + 0.7) / 2 * 10 + 0.7 * 10) / 20 + ((0.3 + 0.7) / 2 * 10 + 0.75 * 10) / 20) / 2
    )
    # the best validation mIoU: doll 0.7 and 0.8, random 0.6 and 0.8
    assert summary["doll"]["best_val_miou"] == pytest.approx(0.75)
    assert summary["random"]["best_val_miou"] == pytest.approx(0.7)
    assert summary["random"]["best_val_miou_std"] == pytest.approx(0.1414, abs=1e-4)
    del runs[3]["test_per_image"]  # a run from before per-image sums: t only
    [without] = paired_comparisons(runs, ("task", "budget"))
    assert without["bootstrap"] is None and without["t"]["mean"] == pytest.approx(0.175)
    results = {
        "experiment": "x",
        "classifiers": {
            "resnet18": {"mean_auroc": 0.86912, "best_epoch": 10},
            "tiny": {"mean_auroc": 0.8, "best_epoch": 8},
        },
        "init_classifier": "resnet18",
        "finetune": {
            "runs": runs,
            "summary": summarise_runs(runs, ("task", "init", "budget")),
            "comparisons": paired_comparisons(runs, ("task", "budget")),
        },
        "stages": [],
    }
    text = results_markdown(results)
    assert (
        "Classifiers, mean validation AUROC at the best epoch: resnet18 0.869 (epoch 10; "
        "encoder of the classifier and doll inits); tiny 0.800 (epoch 8)." in text
    )
    assert "| 8 | doll - random | 2 | +0.175 [" in text and "no per-image sums" in text
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(rich_table(results))
    assert "resnet18 0.869 (epoch 10; encoder of the classifier" in console.export_text()
    assert "step to 95% of random's best" in text and "20 (2/2)" in text


def test_permutation_p_of_spearman_is_exact_for_few_points() -> None:
    import torch

    from doll_core.experiment.ablation import permutation_p

    a = torch.arange(5, dtype=torch.float64)
    # rho = 1 and rho = -1 are each reached by 1 of the 5! = 120 orderings
    assert permutation_p(a, a, 1.0) == pytest.approx(2 / 120)
    # |rho| >= 0.9: the identity and the 4 orderings with one adjacent swap, each sign
    swapped = torch.tensor([1.0, 0.0, 2.0, 3.0, 4.0])
    assert permutation_p(a, swapped, 0.9) == pytest.approx(10 / 120)
    # past 8 points, seeded random orderings: a perfect correlation is rare
    many = torch.arange(12, dtype=torch.float64)
    assert permutation_p(many, many, 1.0) < 0.001
