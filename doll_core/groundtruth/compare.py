"""Score one set of segmentations against ground truth as CheXlocalize's ``eval.py`` does.

For every observation the truth covers (a CheXlocalize file: its ten tasks) and every
image of the truth, sorted by id: the predicted mask (empty when the prediction lists no
such image or observation; it must have the truth's size) against the true mask, IoU by
:func:`~doll_core.metrics.chexlocalize.chexlocalize_iou`. Without ``true_pos_only``, the
images only the prediction lists count too, against an empty truth. An observation's mIoU
is the mean of its defined IoUs; ``overall`` gives the mean of the observations' mIoUs
(each observation weighs the same) and the mean over all defined pairs.

The bootstrap is CheXlocalize's: ``replicates`` resamples of the images (rows sorted by
id) with replacement from ``numpy.random.RandomState(seed)``, one ``choice`` per
replicate, each observation's mean per replicate; the 95% interval is the 25th and 975th
of 1000 sorted replicate means (``int(0.025 n) - 1``, ``int(0.975 n) - 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from doll_core.errors import DollError
from doll_core.groundtruth.truth import GroundTruth
from doll_core.metrics.chexlocalize import chexlocalize_iou

#: CheXlocalize's number of bootstrap replicates and seed.
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairScore:
    """One (image, observation): its IoU (``nan`` where undefined) and mask areas."""

    image: str
    observation: str
    iou: float
    predicted_pixels: int
    true_pixels: int


def _predicted(
    prediction: GroundTruth, image_id: str, observation: str, size: tuple[int, int]
) -> np.ndarray:
    if image_id not in prediction or observation not in prediction.annotated(image_id):
        return np.zeros(size, dtype=bool)
    return prediction.mask(image_id, observation)


def pair_scores(
    prediction: GroundTruth, truth: GroundTruth, *, true_pos_only: bool = True
) -> list[PairScore]:
    """Every (image, observation) IoU (see the module docstring), by observation, then id.

    :raises DollError: when a predicted mask's size differs from the true one's.
    """
    scores = []
    extra = [] if true_pos_only else sorted(i for i in prediction.ids if i not in truth)
    for observation in truth.covered:
        for image_id in sorted(truth.ids):
            true = truth.mask(image_id, observation)
            size = (int(true.shape[0]), int(true.shape[1]))
            predicted = _predicted(prediction, image_id, observation, size)
            if predicted.shape != true.shape:
                raise DollError(
                    f"{prediction.source}: {image_id!r} {observation!r} is "
                    f"{list(predicted.shape)}, the truth {list(true.shape)} (H, W)"
                )
            scores.append(_score(image_id, observation, predicted, true, true_pos_only))
        for image_id in extra:
            if observation in prediction.annotated(image_id):
                predicted = prediction.mask(image_id, observation)
                true = np.zeros_like(predicted)
                scores.append(_score(image_id, observation, predicted, true, true_pos_only))
    return scores


def _score(
    image_id: str, observation: str, predicted: np.ndarray, true: np.ndarray, true_pos_only: bool
) -> PairScore:
    iou = chexlocalize_iou(predicted, true, true_pos_only=true_pos_only)
    return PairScore(image_id, observation, iou, int(predicted.sum()), int(true.sum()))


def _mean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def bootstrap_intervals(
    table: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED
) -> list[tuple[float, float, float]]:
    """``(lower, mean, upper)`` per column of ``table`` ``[images, observations]`` (``nan``
    = undefined) by CheXlocalize's bootstrap (module docstring); ``mean`` is the mean of
    the replicate means."""
    rng = np.random.RandomState(seed)
    rows = table.shape[0]
    means = np.full((replicates, table.shape[1]), math.nan)
    for r in range(replicates):
        sample = table[rng.choice(rows, size=rows, replace=True)]
        means[r] = [_mean(sample[:, j]) for j in range(table.shape[1])]
    lower_at = int(0.025 * replicates) - 1
    upper_at = int((1 - 0.025) * replicates) - 1
    intervals = []
    for j in range(table.shape[1]):
        ordered = np.sort(means[:, j])  # nan last, as pandas sorts
        intervals.append((float(ordered[lower_at]), _mean(ordered), float(ordered[upper_at])))
    return intervals


def compare_segmentations(
    prediction: GroundTruth,
    truth: GroundTruth,
    *,
    true_pos_only: bool = True,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """mIoU of ``prediction`` against ``truth`` per observation and overall, with
    CheXlocalize's bootstrap intervals (none when ``replicates`` is 0) and every pair's
    IoU under ``"pairs"``.

    :raises DollError: when the truth holds no image.
    """
    if not truth.ids:
        raise DollError(f"{truth.source} holds no image")
    pairs = pair_scores(prediction, truth, true_pos_only=true_pos_only)
    images = sorted({p.image for p in pairs})
    row = {image_id: k for k, image_id in enumerate(images)}
    observations = list(truth.covered)
    table = np.full((len(images), len(observations)), math.nan)
    for pair in pairs:
        table[row[pair.image], observations.index(pair.observation)] = pair.iou
    intervals = bootstrap_intervals(table, replicates, seed) if replicates and images else None
    per_observation = {}
    for j, observation in enumerate(observations):
        column = table[:, j]
        entry: dict[str, Any] = {"miou": _mean(column), "n": int((~np.isnan(column)).sum())}
        if intervals is not None:
            lower, mean, upper = intervals[j]
            entry["bootstrap"] = {"lower": lower, "mean": mean, "upper": upper}
        per_observation[observation] = entry
    defined = [e["miou"] for e in per_observation.values() if not math.isnan(e["miou"])]
    return {
        "prediction": prediction.source,
        "truth": truth.source,
        "true_pos_only": true_pos_only,
        "images": len(images),
        "bootstrap": {"replicates": replicates, "seed": seed} if intervals is not None else None,
        "per_observation": per_observation,
        "overall": {
            "miou_mean_of_observations": float(np.mean(defined)) if defined else math.nan,
            "miou_all_pairs": _mean(table.ravel()),
            "n": int((~np.isnan(table)).sum()),
        },
        "pairs": [p.__dict__ for p in pairs],
    }
