"""Scores of maps against ground truth at its native grid, per map and per observation.

A map made at the model's input size (or a label store's size) is compared with a true
mask at the image's native size as CheXlocalize compares them: the map is resized to the
mask (bilinear, ``align_corners=False``; :func:`~doll_core.metrics.chexlocalize.resize_map`);
a binary map is resized by nearest neighbour. Every map gets

* ``chexlocalize_miou``: CheXlocalize's IoU (true-positive slice) of its segmentation;
* ``hit_rate``: CheXlocalize's hit (the map's first maximum inside the mask);
* every metric of :data:`~doll_core.metrics.localization.LOCALIZATION_METRICS` on the
  resized map, the resized binary map and the mask.

The means skip undefined (``nan``) values, so ``chexlocalize_miou`` is CheXlocalize's
mIoU and ``hit_rate`` its hit rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from doll_core.metrics.chexlocalize import chexlocalize_iou, hit
from doll_core.metrics.localization import LOCALIZATION_METRICS, nanmean, nanstd

#: The names of the two CheXlocalize scores, before the project's metrics.
CHEXLOCALIZE_SCORES = ("chexlocalize_miou", "hit_rate")
SCORE_NAMES: tuple[str, ...] = (*CHEXLOCALIZE_SCORES, *(m.name for m in LOCALIZATION_METRICS))


def score_map(
    soft: torch.Tensor, truth: np.ndarray, binary: np.ndarray, segmentation: np.ndarray
) -> dict[str, float]:
    """Every score (module docstring) of one map at the mask's size ``[H, W]``: ``soft``
    (float), ``binary`` (DoLL's binarised map), ``segmentation`` (CheXlocalize's), bool
    ``truth``."""
    mask = torch.from_numpy(np.ascontiguousarray(truth))
    chosen = torch.from_numpy(np.ascontiguousarray(binary))
    values = {
        "chexlocalize_miou": chexlocalize_iou(segmentation, truth, true_pos_only=True),
        "hit_rate": hit(soft, truth),
    }
    for metric in LOCALIZATION_METRICS:
        values[metric.name] = float(metric(soft[None].float(), mask[None], chosen[None])[0])
    return values


@dataclass
class ScoreTable:
    """Scores of maps, each with its observation; summarised overall and per observation."""

    rows: list[tuple[str, dict[str, float]]] = field(default_factory=list)

    def add(self, observation: str, values: dict[str, float]) -> None:
        self.rows.append((observation, values))

    def _column(self, name: str, observation: str | None = None) -> torch.Tensor:
        values = [
            v.get(name, math.nan) for o, v in self.rows if observation is None or o == observation
        ]
        return torch.tensor(values, dtype=torch.float64)

    def names(self) -> list[str]:
        present = {name for _, values in self.rows for name in values}
        return [n for n in SCORE_NAMES if n in present]

    def means(self, observation: str | None = None) -> dict[str, float]:
        """Mean of each score over the maps (of ``observation``), ``nan`` skipped."""
        return {name: nanmean(self._column(name, observation)) for name in self.names()}

    def stds(self) -> dict[str, float]:
        return {name: nanstd(self._column(name)) for name in self.names()}

    def per_observation(self) -> dict[str, dict[str, Any]]:
        """``{observation: {"maps": n, score: mean, ...}}`` in the order first seen."""
        observations = dict.fromkeys(o for o, _ in self.rows)
        return {
            o: {"maps": sum(1 for r, _ in self.rows if r == o), **self.means(o)}
            for o in observations
        }

    def summary(self) -> dict[str, Any]:
        """``{"maps": n, score: mean, ..., "std": {...}, "per_observation": {...}}``."""
        return {
            "maps": len(self.rows),
            **self.means(),
            "std": self.stds(),
            "per_observation": self.per_observation(),
        }
