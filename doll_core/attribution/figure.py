"""Pictures of attribution maps: one image, one overlay per explainer and target."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from doll_core.observations import OBSERVATIONS
from doll_core.plotting import pyplot, save_figure


def save_explanation_figure(
    image: torch.Tensor,
    maps: dict[str, torch.Tensor],
    targets: Sequence[int],
    probabilities: torch.Tensor,
    out: str | Path,
    *,
    masks: dict[int, np.ndarray] | None = None,
    title: str = "",
) -> Path:
    """Save a grid: one row per explainer, one column per target (plus the image).

    :param image: ``[C, H, W]`` in [0, 1]. :param maps: explainer -> ``[T, H, W]`` (soft,
        in [0, 1]). :param targets: observation index per column.
    :param probabilities: ``[14]`` class probabilities (shown in the column titles).
    :param masks: observation index -> bool ``[H, W]`` ground truth, outlined in green.
    """
    plt = pyplot()

    grey = image.mean(dim=0).numpy()
    rows, columns = len(maps), len(targets) + 1
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.4 * columns, 2.5 * rows + 0.4), squeeze=False
    )
    for row, (name, explainer_maps) in enumerate(maps.items()):
        axes[row, 0].imshow(grey, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_ylabel(name, fontsize=8)
        for column, index in enumerate(targets, start=1):
            axis = axes[row, column]
            axis.imshow(grey, cmap="gray", vmin=0, vmax=1)
            axis.imshow(
                explainer_maps[column - 1].numpy(), cmap="inferno", alpha=0.55, vmin=0, vmax=1
            )
            if masks and index in masks and masks[index].any():
                axis.contour(
                    masks[index].astype(float), levels=[0.5], colors=["lime"], linewidths=0.8
                )
            if row == 0:
                axis.set_title(
                    f"{OBSERVATIONS[index]}\np = {float(probabilities[index]):.2f}", fontsize=8
                )
    if masks:
        for index, mask in masks.items():
            if index in targets and mask.any():
                axes[0, 0].contour(
                    mask.astype(float), levels=[0.5], colors=["lime"], linewidths=0.8
                )
    axes[0, 0].set_title("image (truth in green)" if masks else "image", fontsize=8)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, out, dpi=100)
