"""A picture of example labels over their images."""

from __future__ import annotations

from pathlib import Path

from doll_core.data.samples import SkippedSample
from doll_core.labels.dataset import LabeledImages
from doll_core.observations import OBSERVATIONS
from doll_core.plotting import pyplot, save_figure


def save_label_grid(store: str | Path, out: str | Path, count: int = 8) -> Path:
    """Save up to ``count`` labelled images (one panel per image and observation)."""
    plt = pyplot()

    dataset = LabeledImages(store)
    panels = []
    for index in range(len(dataset)):
        sample = dataset[index]
        if isinstance(sample, SkippedSample):
            continue
        for k in range(len(OBSERVATIONS)):
            if sample["target"][k].any():
                panels.append((sample, k))
        if len(panels) >= count:
            break
    panels = panels[:count] or []
    columns = 4
    rows = max(1, (len(panels) + columns - 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (sample, k) in zip(axes.ravel(), panels, strict=False):
        axis.imshow(sample["image"].mean(0).numpy(), cmap="gray", vmin=0, vmax=1)
        axis.imshow(sample["target"][k].numpy(), cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        axis.set_title(OBSERVATIONS[k], fontsize=8)
    return save_figure(figure, out, dpi=90)
