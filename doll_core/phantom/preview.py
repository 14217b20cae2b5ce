"""A picture of a phantom: images with the outlines of their ground-truth lesion masks."""

from __future__ import annotations

from pathlib import Path

from doll_core.data.imageio import read_mask
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.phantom.layout import lesion_mask_path
from doll_core.plotting import pyplot, save_figure
from doll_core.registry import get_registry


def save_preview(
    root: str | Path, out: str | Path, *, count: int = 12, split: str = "train", columns: int = 4
) -> Path:
    """Draw ``count`` phantom images of ``split`` (read with the ``chexpert`` reader) with
    each present observation's mask outlined in its own colour; save as PNG at ``out``."""
    plt = pyplot()

    dataset = get_registry().create("dataset", "chexpert", root=root, split=split, size=None)
    if len(dataset) == 0:
        raise DollError(f"no images in the {split} split of {root}")
    present = [
        {n for n in OBSERVATIONS if lesion_mask_path(root, dataset.sample_id(i), n).is_file()}
        for i in range(len(dataset))
    ]
    chosen = _pick(present, count)
    colours = [*(f"C{i}" for i in range(10)), "gold", "lime", "magenta", "cyan"]
    rows = (len(chosen) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.9 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), chosen, strict=False):
        sample = dataset[index]
        if isinstance(sample, SkippedSample):
            continue
        axis.imshow(sample["image"][0].numpy(), cmap="gray", vmin=0, vmax=1)
        names = []
        for k, name in enumerate(OBSERVATIONS[1:]):
            if name not in present[index]:
                continue
            names.append(name)
            mask = read_mask(lesion_mask_path(root, sample["id"], name)).astype(float)
            if mask.any():
                axis.contour(mask, levels=[0.5], colors=[colours[k]], linewidths=1.0)
        axis.set_title("\n".join(_wrap(names or ["(nothing)"])), fontsize=6.5)
    handles = [
        plt.Line2D([0], [0], color=colours[k], lw=2, label=name)
        for k, name in enumerate(OBSERVATIONS[1:])
    ]
    figure.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    return save_figure(figure, out, dpi=90, rect=(0, 0.07, 1, 1))


def _pick(present: list[set[str]], count: int) -> list[int]:
    """Indices of up to ``count`` images: first those that show observations not shown yet,
    then others with findings, then the rest."""
    chosen: list[int] = []
    shown: set[str] = set()
    for index in sorted(range(len(present)), key=lambda i: -len(present[i])):
        if len(chosen) < count and present[index] - shown:
            chosen.append(index)
            shown |= present[index]
    rest = [i for i in range(len(present)) if i not in chosen]
    rest.sort(key=lambda i: not present[i])
    return sorted(chosen + rest[: count - len(chosen)])


def _wrap(names: list[str], width: int = 42) -> list[str]:
    lines: list[str] = []
    current = ""
    for name in names:
        candidate = f"{current}, {name}" if current else name
        if len(candidate) > width and current:
            lines.append(current)
            candidate = name
        current = candidate
    return [*lines, current]
