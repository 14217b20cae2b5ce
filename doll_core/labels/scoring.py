"""Localisation of a label store's maps against true masks: the phantom's lesion masks
(:func:`score_store`) or any ground truth (:func:`score_store_against`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from doll_core.data.imageio import read_mask, resize_mask
from doll_core.groundtruth.matching import match_ids
from doll_core.groundtruth.scoring import ScoreTable, score_map
from doll_core.groundtruth.truth import GroundTruth
from doll_core.labels.export import EXPORT_THRESHOLD, binarised
from doll_core.labels.store import LabelStore
from doll_core.metrics.chexlocalize import resize_map
from doll_core.metrics.localization import LOCALIZATION_METRICS, nanmean, nanstd
from doll_core.observations import OBSERVATIONS
from doll_core.phantom.layout import lesion_mask_path


def score_store(store: str | Path, phantom: str | Path, threshold: float = 0.5) -> dict[str, Any]:
    """Mean of every localisation metric over the store's maps (binarised at ``threshold``
    for IoU and Dice), against the masks at the maps' resolution; their standard
    deviations over the maps under ``"std"``."""
    labels = LabelStore(store)
    softs, masks = [], []
    for image_id in labels.ids:
        observations, maps = labels.labels(image_id)
        for k, index in enumerate(observations):
            path = lesion_mask_path(phantom, image_id, OBSERVATIONS[index])
            size = (int(maps.shape[-2]), int(maps.shape[-1]))
            truth = torch.zeros(size, dtype=torch.bool)
            if path.is_file():
                mask = torch.from_numpy(read_mask(path).astype(np.float32))[None]
                truth = resize_mask(mask, size)[0] > 0.5
            softs.append(maps[k].float() / 255)
            masks.append(truth)
    if not softs:
        return {"maps": 0}
    soft, truth = torch.stack(softs), torch.stack(masks)
    binary = soft >= threshold
    result: dict[str, Any] = {"maps": len(softs)}
    spread: dict[str, float] = {}
    for metric in LOCALIZATION_METRICS:
        values = metric(soft, truth, binary)
        result[metric.name] = nanmean(values)
        spread[metric.name] = nanstd(values)
    result["std"] = spread
    return result


def score_store_against(
    store: str | Path, truth: GroundTruth, threshold: float = EXPORT_THRESHOLD
) -> dict[str, Any]:
    """Every score of :mod:`doll_core.groundtruth.scoring` for each map of the store whose
    image matches one of ``truth``'s (:mod:`doll_core.groundtruth.matching`) and whose
    observation ``truth`` covers, at the image's native size: the label resized
    (bilinear) and binarised as ``doll labels export`` writes it (``>= threshold`` and
    above 0), which is also its CheXlocalize segmentation; overall, with standard
    deviations under ``"std"``, and per observation. ``images``: the store's images that
    matched; ``unmatched``: those that did not.
    """
    labels = LabelStore(store)
    matched = match_ids(labels.ids, truth)
    table = ScoreTable()
    for store_id, image_id in matched.items():
        observations, maps = labels.labels(store_id)
        for k, index in enumerate(observations):
            observation = OBSERVATIONS[index]
            if not truth.covers(observation):
                continue
            true = truth.mask(image_id, observation)
            size = (int(true.shape[0]), int(true.shape[1]))
            soft = resize_map(maps[k].float() / 255, size)
            binary = binarised(soft, threshold)  # from the one resize above
            table.add(observation, score_map(soft, true, binary, binary))
    return {
        "truth": truth.source,
        "images": len(matched),
        "unmatched": len(labels.ids) - len(matched),
        **table.summary(),
    }
