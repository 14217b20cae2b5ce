"""CheXlocalize's localization rules (Saporta et al., Nature Machine Intelligence 2022;
``rajpurkarlab/cheXlocalize``), reproduced without OpenCV.

* A heatmap becomes a segmentation at the image's native size: the map is resized to
  ``(H, W)`` (bilinear, ``align_corners=False``), shifted and scaled to ``[0, 1]``
  (``(m - min) / (max - min)``), and then

  - by default thresholded by Otsu's method as CheXlocalize calls OpenCV:
    ``uint8(255 * m)`` (truncated), ``cv2.threshold(.., THRESH_OTSU)``, foreground where
    the value is *above* the threshold; :func:`otsu_threshold_u8` is OpenCV's algorithm;
  - or, with a fixed ``threshold``, foreground where ``m > threshold``.

  A flat map (``max == min``) has no segmentation (all background).
* IoU of one image and task (``calculate_iou``): with ``true_pos_only`` (CheXlocalize's
  default), undefined (``nan``) unless both the prediction and the truth are non-empty;
  without it, undefined only when both are empty (one empty: 0).
* Hit (pointing game, ``get_hitrates``): 1 if the truth holds the map's largest value
  (the first in row-major order, ``np.argmax``), else 0; undefined when the truth is
  empty. Computed on the resized map.
* mIoU and hit rate of a task: the mean over images of the defined values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional

#: ``FLT_EPSILON``, the guard of OpenCV's Otsu loop.
_FLT_EPSILON = float(np.finfo(np.float32).eps)


def resize_map(heatmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float32 ``[h, w]`` -> ``[H, W]``, bilinear with ``align_corners=False`` (as
    CheXlocalize resizes its maps to the image)."""
    values = heatmap.float()
    if tuple(values.shape) == tuple(size):
        return values
    return functional.interpolate(
        values[None, None], size=size, mode="bilinear", align_corners=False
    )[0, 0]


def otsu_threshold_u8(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 ``values`` exactly as OpenCV's ``THRESH_OTSU`` computes
    it (``getThreshVal_Otsu_8u``): the first level ``t`` that maximises the between-class
    variance of ``<= t`` against ``> t``, in float64, skipping levels where a class weight
    is below ``FLT_EPSILON``; 0 when no level qualifies."""
    histogram = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    scale = 1.0 / values.size
    mu = float(np.dot(np.arange(256, dtype=np.float64), histogram)) * scale
    mu1 = q1 = best_sigma = 0.0
    best = 0
    for level in range(256):
        p = float(histogram[level]) * scale
        mu1 *= q1
        q1 += p
        q2 = 1.0 - q1
        if min(q1, q2) < _FLT_EPSILON or max(q1, q2) > 1.0 - _FLT_EPSILON:
            continue
        mu1 = (mu1 + level * p) / q1
        mu2 = (mu - q1 * mu1) / q2
        sigma = q1 * q2 * (mu1 - mu2) ** 2
        if sigma > best_sigma:
            best_sigma, best = sigma, level
    return best


def normalise(heatmap: torch.Tensor) -> torch.Tensor | None:
    """``[H, W]`` shifted and scaled to ``[0, 1]`` in float32; ``None`` for a flat map."""
    values = heatmap.float()
    shifted = values - values.min()
    peak = shifted.max()
    if not bool(peak > 0):
        return None
    return shifted / peak


def segment_heatmap(
    heatmap: torch.Tensor, size: tuple[int, int], threshold: float | None = None
) -> np.ndarray:
    """bool ``[H, W]``: CheXlocalize's segmentation of ``heatmap`` ``[h, w]`` at ``size``
    (see the module docstring); ``threshold`` ``None`` is Otsu's."""
    unit = normalise(resize_map(heatmap, size))
    if unit is None:
        return np.zeros(size, dtype=bool)
    if threshold is not None:
        return (unit > threshold).numpy()
    levels = (255 * unit).numpy().astype(np.uint8)
    return levels > otsu_threshold_u8(levels)


def chexlocalize_iou(prediction: np.ndarray, truth: np.ndarray, *, true_pos_only: bool) -> float:
    """IoU of two bool ``[H, W]`` masks by CheXlocalize's rule (module docstring)."""
    predicted, present = bool(prediction.any()), bool(truth.any())
    if (true_pos_only and not (predicted and present)) or not (predicted or present):
        return math.nan
    union = int(np.logical_or(prediction, truth).sum())
    return int(np.logical_and(prediction, truth).sum()) / union


def hit(heatmap: torch.Tensor, truth: np.ndarray) -> float:
    """1.0 / 0.0: whether bool ``truth`` ``[H, W]`` holds the first maximum of ``heatmap``
    (at ``truth``'s size already); ``nan`` for an empty truth."""
    if not truth.any():
        return math.nan
    flat = int(np.argmax(heatmap.float().numpy(), axis=None))
    return float(truth.ravel()[flat])
