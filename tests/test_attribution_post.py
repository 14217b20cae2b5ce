"""Target selection, post-processing and localisation scores on tiny hand-made arrays."""

from __future__ import annotations

import math

import pytest
import torch

from doll_core.attribution.api import check_attributions, relative_errors
from doll_core.attribution.postprocess import PostprocessConfig, otsu_threshold, postprocess
from doll_core.attribution.targets import select_targets
from doll_core.errors import DollError, PluginError
from doll_core.metrics.localization import (
    Dice,
    IoU,
    PixelAUROC,
    PointingGame,
    RelevanceMassAccuracy,
    TopKIntersection,
    randomization_similarity,
    randomized_copy,
)
from doll_core.observations import OBSERVATIONS

K = OBSERVATIONS.index


def test_positive_predicted_and_all_targets() -> None:
    labels = torch.zeros(3, 14)
    labels[0, [K("No Finding")]] = 1
    labels[1, [K("Cardiomegaly"), K("Edema"), K("Fracture")]] = 1
    labels[2, [K("Edema")]] = 1
    mask = torch.ones(3, 14, dtype=torch.bool)
    mask[1, K("Fracture")] = False  # an ignored (uncertain) label is not explained
    targets = select_targets("positive", labels=labels, label_mask=mask)
    assert targets.tolist() == [[-1, -1], [K("Cardiomegaly"), K("Edema")], [K("Edema"), -1]]
    probabilities = torch.full((2, 14), 0.2)
    probabilities[1, K("Pneumothorax")] = 0.7
    assert select_targets("predicted", probabilities=probabilities).tolist() == [[-1], [9]]
    assert select_targets("predicted", probabilities=probabilities, threshold=0.1).shape == (2, 13)
    assert select_targets("all", labels=labels, exclude=()).shape == (3, 14)
    with pytest.raises(DollError, match="target mode must be one of"):
        select_targets("positives", labels=labels)


def test_postprocess_order_and_values() -> None:
    raw = torch.tensor([[[[-2.0, 0.0], [1.0, 4.0]]]])  # [1, 1, 2, 2]
    config = PostprocessConfig(clip_percentile=None, binarize="threshold", threshold=0.5)
    out = postprocess(raw, config)
    torch.testing.assert_close(out.soft, torch.tensor([[[[0.0, 0.0], [0.25, 1.0]]]]))
    assert out.binary.tolist() == [[[[False, False], [False, True]]]]
    absolute = postprocess(
        raw, PostprocessConfig(sign="absolute", clip_percentile=None, gamma=2.0, binarize="none")
    )
    torch.testing.assert_close(absolute.soft, torch.tensor([[[[0.25, 0.0], [0.0625, 1.0]]]]))
    assert absolute.binary is None
    clipped = postprocess(
        torch.arange(100.0).view(1, 1, 10, 10),
        PostprocessConfig(clip_percentile=50, binarize="topk", top_k_percent=10),
    )
    assert clipped.soft.max() == 1 and int((clipped.soft == 1).sum()) == 50
    assert int(clipped.binary.sum()) == 50  # ties at the top: all 50 clipped pixels


def test_no_signal_maps_are_zeroed_and_counted_without_dividing_by_zero() -> None:
    raw = torch.zeros(1, 4, 3, 3)
    raw[0, 1] = -1.0  # negative only: no positive signal
    raw[0, 2, 0, 0] = float("nan")
    raw[0, 3, 1, 1] = 2.0
    targets = torch.tensor([[3, 5, 7, 9]])
    out = postprocess(raw, PostprocessConfig(), targets=targets)
    assert out.no_signal == 3
    assert torch.isfinite(out.soft).all() and out.soft[0, :3].abs().sum() == 0
    assert out.soft[0, 3, 1, 1] == 1 and out.binary[0, 3].sum() == 1
    padded = postprocess(raw, PostprocessConfig(), targets=torch.tensor([[3, -1, -1, 9]]))
    assert padded.no_signal == 1  # -1 slots are not counted


def test_gating_by_probability() -> None:
    raw = torch.ones(1, 2, 2, 2)
    out = postprocess(
        raw,
        PostprocessConfig(gate=0.5, clip_percentile=None, binarize="none"),
        probabilities=torch.tensor([[0.4, 0.6]]),
    )
    assert out.soft[0, 0].sum() == 0 and out.soft[0, 1].sum() == 4


def test_otsu_splits_two_clusters() -> None:
    values = torch.cat([torch.full((50,), 0.1), torch.full((50,), 0.9)])
    threshold = otsu_threshold(values)
    assert 0.1 < threshold <= 0.9
    out = postprocess(values.view(1, 1, 10, 10), PostprocessConfig(clip_percentile=None))
    assert int(out.binary.sum()) == 50


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    soft = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 0.3]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    binary = soft >= 0.5  # (0,0) and (1,0)
    return soft[None], mask[None], binary[None]


def test_localisation_scores_by_hand() -> None:
    soft, mask, binary = _case()
    assert PointingGame()(soft, mask).item() == 1.0
    assert IoU()(soft, mask, binary).item() == pytest.approx(1 / 3)  # 1 shared of 3 in union
    assert Dice()(soft, mask, binary).item() == pytest.approx(2 * 1 / (2 + 2))
    assert TopKIntersection()(soft, mask).item() == 0.5  # top-2: (0,0) in, (1,0) out
    assert RelevanceMassAccuracy()(soft, mask).item() == pytest.approx(1.0 / 2.1)
    # mask pixels score 0.9 and 0.1; against 7 negatives (0.8, 0.3, five 0.0):
    # 0.9 beats all 7; 0.1 beats the five zeros -> (7 + 5) / 14
    assert PixelAUROC()(soft, mask).item() == pytest.approx(12 / 14)
    assert PointingGame.higher_is_better and IoU.needs_binary


def test_empty_masks_and_zero_maps() -> None:
    soft, mask, binary = _case()
    empty = torch.zeros_like(mask)
    for metric in (
        PointingGame(),
        IoU(),
        Dice(),
        TopKIntersection(),
        RelevanceMassAccuracy(),
        PixelAUROC(),
    ):
        assert math.isnan(metric(soft, empty, binary).item()), metric.name
    zero = torch.zeros_like(soft)
    assert PointingGame()(zero, mask).item() == 0.0
    assert TopKIntersection()(zero, mask).item() == 0.0
    assert math.isnan(RelevanceMassAccuracy()(zero, mask).item())
    assert IoU()(zero, mask, torch.zeros_like(binary)).item() == 0.0
    assert PixelAUROC()(zero, mask).item() == 0.5


def test_model_randomisation_changes_weights_and_similarity() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    model[1].running_mean.fill_(3.0)
    random = randomized_copy(model, seed=1)
    assert not torch.equal(random[0].weight, model[0].weight)
    assert random[1].running_mean.abs().sum() == 0
    maps = torch.rand(3, 5, 5)
    assert randomization_similarity(maps, maps) == pytest.approx(1.0)
    assert randomization_similarity(maps, -maps.flip(-1)) < 1.0


def test_attribution_results_are_checked() -> None:
    images = torch.zeros(2, 1, 4, 4)
    targets = torch.tensor([[1, -1], [2, 3]])
    good = torch.zeros(2, 2, 4, 4)
    good[1, 1] = float("inf")
    cleaned, bad = check_attributions(good, images, targets, "mine")
    assert bad == 1 and cleaned[1, 1].abs().sum() == 0
    with pytest.raises(PluginError, match=r"'mine' returned shape \[2, 2, 2, 2\]"):
        check_attributions(torch.zeros(2, 2, 2, 2), images, targets, "mine")
    with pytest.raises(PluginError, match=r"torch\.float64"):
        check_attributions(torch.zeros(2, 2, 4, 4, dtype=torch.float64), images, targets, "mine")
    leaking = torch.zeros(2, 2, 4, 4)
    leaking[0, 1] = 1.0
    with pytest.raises(PluginError, match="non-zero maps for target -1"):
        check_attributions(leaking, images, targets, "mine")


def test_pointing_game_counts_tied_maxima_by_their_share() -> None:
    soft = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])  # flat: four tied maxima
    mask = torch.tensor([[[True, False], [False, False]]])
    assert PointingGame()(soft, mask).item() == 0.25


def test_relative_errors_equal_hand_computed_values() -> None:
    value = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    reference = torch.tensor([[1.0, 1.0], [1.0, 2.0]])
    # difference [0, 1, 2, 2]: max 2 over max |reference| 2; L2 3 over sqrt(7)
    errors = relative_errors(value, reference)
    assert errors["max_abs"] == pytest.approx(1.0)
    assert errors["l2"] == pytest.approx(3.0 / 7.0**0.5)
    assert relative_errors(value, torch.zeros(2, 2)) == {"max_abs": 0.0, "l2": 0.0}


def test_a_flat_map_has_no_signal_whatever_the_smoothing_rounds() -> None:
    """A constant map is flat at its floor: smoothing it in float32 must not turn its
    rounding into a label (hypothesis found -3e38 everywhere, sigma 1, becoming 1s and 0s)."""
    maps = torch.full((1, 1, 4, 5), -3e38)
    for sigma in (0.0, 1.0):
        post = postprocess(
            maps, PostprocessConfig(sign="none", smooth_sigma=sigma, binarize="none")
        )
        assert post.no_signal == 1 and not bool(post.soft.any())
