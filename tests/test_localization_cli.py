"""``doll localization compare``: CheXlocalize's evaluation of segmentations, in DoLL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.groundtruth import read_ground_truth
from doll_core.groundtruth.compare import bootstrap_intervals, compare_segmentations, pair_scores
from doll_core.groundtruth.names import CHEXLOCALIZE_TASKS, observation_name
from doll_core.groundtruth.rle import encode_mask
from doll_core.metrics.chexlocalize import otsu_threshold_u8, segment_heatmap

REAL = Path(__file__).parent / "data" / "real" / "chexlocalize"
GRADCAM = REAL / "gradcam_segmentations_val_sample.json"
TRUTH_RLE = REAL / "gt_segmentations_val.json"
TRUTH_POLYGONS = REAL / "gt_annotations_val.json"
runner = CliRunner()


def test_gradcam_ious_equal_pycocotools_and_numpy() -> None:
    """CheXlocalize's Grad-CAM segmentations against its ground truth: every (image,
    observation) IoU is pycocotools' ``mask.iou`` of the RLEs and numpy's of the masks."""
    predicted = json.loads(GRADCAM.read_text())
    true = json.loads(TRUTH_RLE.read_text())
    pairs = pair_scores(
        read_ground_truth(f"chexlocalize:{GRADCAM}"), read_ground_truth(f"chexlocalize:{TRUTH_RLE}")
    )
    by_pair = {(p.image, p.observation): p.iou for p in pairs}
    assert len(by_pair) == len(true) * len(CHEXLOCALIZE_TASKS) == 10
    checked = 0
    for image_id, tasks in true.items():
        for task in CHEXLOCALIZE_TASKS:
            ours = by_pair[(image_id, observation_name(task))]
            gt, dt = tasks[task], predicted[image_id][task]
            gt_mask, dt_mask = coco_mask.decode(gt).astype(bool), coco_mask.decode(dt).astype(bool)
            if not gt_mask.any() or not dt_mask.any():  # CheXlocalize's true-positive slice
                assert math.isnan(ours)
                continue
            coco_iou = float(coco_mask.iou([dt], [gt], [0])[0][0])
            numpy_iou = (gt_mask & dt_mask).sum() / (gt_mask | dt_mask).sum()
            assert ours == pytest.approx(coco_iou, abs=1e-12)
            assert ours == pytest.approx(numpy_iou, abs=1e-12)
            checked += 1
    assert checked == 3  # Enlarged Cardiomediastinum, Cardiomegaly, Airspace Opacity


def test_compare_command_reports_per_observation_and_overall() -> None:
    result = runner.invoke(
        app, ["localization", "compare", str(GRADCAM), f"chexlocalize:{TRUTH_RLE}", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    per = report["per_observation"]
    assert list(per) == [observation_name(t) for t in CHEXLOCALIZE_TASKS]
    assert per["Cardiomegaly"]["miou"] == pytest.approx(0.366206, abs=1e-6)
    assert per["Enlarged Cardiomediastinum"]["miou"] == pytest.approx(0.462347, abs=1e-6)
    assert per["Lung Opacity"]["miou"] == 0.0
    assert per["Edema"] == {
        "miou": None,
        "n": 0,
        "bootstrap": {"lower": None, "mean": None, "upper": None},
    }
    # one image: every bootstrap replicate is that image
    assert per["Cardiomegaly"]["bootstrap"]["lower"] == per["Cardiomegaly"]["miou"]
    overall = report["overall"]
    assert overall["n"] == 3
    assert overall["miou_mean_of_observations"] == pytest.approx(
        (0.366206 + 0.462347) / 3, abs=1e-6
    )
    # the polygons give the same numbers as the RLEs made from them
    polygons = runner.invoke(
        app, ["localization", "compare", str(GRADCAM), str(TRUTH_POLYGONS), "--json"]
    )
    assert json.loads(polygons.stdout)["per_observation"] == per
    table = runner.invoke(app, ["localization", "compare", str(GRADCAM), str(TRUTH_RLE)])
    assert (
        table.exit_code == 0
        and "| Cardiomegaly | 0.366 | 0.366 | 1 | [0.366, 0.366] |" in table.stdout
    )


def _segmentations(path: Path, entries: dict[str, dict[str, np.ndarray]]) -> str:
    path.write_text(
        json.dumps({i: {t: encode_mask(m) for t, m in e.items()} for i, e in entries.items()})
    )
    return str(path)


def test_true_positive_slice_and_all_images(tmp_path: Path) -> None:
    square = np.zeros((4, 4), dtype=bool)
    square[:2, :2] = True
    empty = np.zeros((4, 4), dtype=bool)
    truth = _segmentations(
        tmp_path / "gt.json",
        {"a": {"Edema": square, "Cardiomegaly": empty}, "b": {"Edema": empty}},
    )
    predicted = _segmentations(
        tmp_path / "pred.json",
        {"a": {"Edema": square[:, ::-1] | square, "Cardiomegaly": square}, "c": {"Edema": square}},
    )
    pred, true = (
        read_ground_truth(f"chexlocalize:{predicted}"),
        read_ground_truth(f"chexlocalize:{truth}"),
    )
    slice_ = compare_segmentations(pred, true, replicates=0)
    assert slice_["per_observation"]["Edema"] == {"miou": 0.5, "n": 1}
    assert math.isnan(slice_["per_observation"]["Cardiomegaly"]["miou"])
    every = compare_segmentations(pred, true, true_pos_only=False, replicates=0)
    # Edema: a 0.5; b (neither) undefined; c (predicted only) 0. Cardiomegaly: a 0
    assert every["per_observation"]["Edema"] == {"miou": 0.25, "n": 2}
    assert every["per_observation"]["Cardiomegaly"] == {"miou": 0.0, "n": 1}
    assert every["images"] == 3


def test_bootstrap_is_chexlocalizes() -> None:
    table = np.array([[0.1, math.nan], [0.5, 1.0], [0.9, 0.0], [math.nan, math.nan]])
    (lower, mean, upper), _ = bootstrap_intervals(table, replicates=1000, seed=0)
    rng = np.random.RandomState(0)
    means = []
    for _ in range(1000):
        column = table[rng.choice(4, size=4, replace=True), 0]
        defined = column[~np.isnan(column)]
        means.append(defined.mean() if defined.size else math.nan)
    ordered = np.sort(means)
    assert (lower, upper) == (ordered[24], ordered[974])
    assert mean == pytest.approx(np.nanmean(ordered))


def test_compare_errors_are_one_line(tmp_path: Path) -> None:
    unknown = runner.invoke(app, ["localization", "compare", "cheX:a.json", str(TRUTH_RLE)])
    assert unknown.exit_code == 2 and "unknown ground-truth kind 'cheX'" in unknown.stderr
    small = _segmentations(
        tmp_path / "small.json",
        {"patient64541_study1_view1_frontal": {"Edema": np.ones((4, 4), bool)}},
    )
    wrong = runner.invoke(app, ["localization", "compare", small, str(TRUTH_RLE)])
    assert wrong.exit_code == 2
    assert "'Edema' is [4, 4], the truth [2320, 2828] (H, W)" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text("{")
    bad = runner.invoke(
        app, ["localization", "compare", str(tmp_path / "bad.json"), str(TRUTH_RLE)]
    )
    assert bad.exit_code == 2 and "bad.json is not JSON" in bad.stderr


def _cv2_otsu_reference(values: np.ndarray) -> int:
    """Otsu by its definition: the first level that maximises w0 w1 (mu0 - mu1)^2."""
    histogram = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    best, level = -1.0, 0
    for t in range(256):
        w0, w1 = histogram[: t + 1].sum(), histogram[t + 1 :].sum()
        if w0 == 0 or w1 == 0:
            continue
        mu0 = (np.arange(t + 1) * histogram[: t + 1]).sum() / w0
        mu1 = (np.arange(t + 1, 256) * histogram[t + 1 :]).sum() / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
        if between > best * (1 + 1e-12):
            best, level = between, t
    return level


def test_otsu_and_heatmap_segmentation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = np.clip(rng.normal(rng.uniform(40, 200), 30, size=(50, 60)), 0, 255).astype(
            np.uint8
        )
        values[:10] = rng.integers(0, 256, size=(10, 60))
        assert otsu_threshold_u8(values) == _cv2_otsu_reference(values)
    import torch

    heatmap = torch.zeros(4, 4)
    heatmap[1:3, 1:3] = 1.0
    segmentation = segment_heatmap(heatmap, (8, 8))  # bilinear to 8x8, then Otsu
    assert (
        segmentation.shape == (8, 8) and segmentation[3:5, 3:5].all() and not segmentation[0].any()
    )
    assert not segment_heatmap(torch.ones(4, 4), (8, 8)).any()  # a flat map: nothing
    fixed = segment_heatmap(heatmap, (4, 4), threshold=0.5)
    assert np.array_equal(fixed, heatmap.numpy() > 0.5)


def test_the_table_leads_with_the_number_chexlocalize_users_quote() -> None:
    """Issue 29, item 10: eval.py's summary ``mean`` is the mean of its bootstrap
    replicates (0.227 where the plain mean is 0.231): the table shows both, named."""
    from doll_core.cli.localization_cmd import comparison_table

    table = np.array([[0.1], [0.2], [0.9], [0.3], [0.0], [0.7]])
    ((lower, mean, upper),) = bootstrap_intervals(table, replicates=1000, seed=0)
    result = {
        "bootstrap": {"replicates": 1000, "seed": 0},
        "per_observation": {
            "Edema": {"miou": float(table.mean()), "n": 6,
                      "bootstrap": {"lower": lower, "mean": mean, "upper": upper}},
        },
        "overall": {"miou_mean_of_observations": float(table.mean()),
                    "miou_all_pairs": float(table.mean()), "n": 6},
    }  # fmt: skip
    text = comparison_table(result)
    assert "mIoU (CheXlocalize summary: bootstrap mean) | mean IoU" in text
    assert f"| Edema | {mean:.3f} | {table.mean():.3f} | 6 |" in text
    assert round(mean, 3) != round(float(table.mean()), 3)
