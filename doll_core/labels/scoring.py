"""Localisation of a label store's maps against the phantom's true lesion masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from doll_core.data.imageio import read_mask, resize_mask
from doll_core.labels.store import LabelStore
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
