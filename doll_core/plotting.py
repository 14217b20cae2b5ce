"""Matplotlib for files only: a headless backend, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doll_core.atomic import atomic_write
from doll_core.links import refuse_link


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use:
    matplotlib is slow to import and only the figure writers need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    figure: Any, out: str | Path, dpi: int, rect: tuple[float, float, float, float] | None = None
) -> Path:
    """Lay out ``figure`` (within ``rect`` of the canvas, if given), write it to ``out``
    (parent folders made), and free it."""
    plt = pyplot()
    if rect is None:
        figure.tight_layout()
    else:
        figure.tight_layout(rect=rect)
    out = refuse_link(out)
    image_format = out.suffix.lstrip(".") or "png"
    try:  # written beside it, then renamed: a link in its place is replaced, not followed
        atomic_write(out, lambda handle: figure.savefig(handle, dpi=dpi, format=image_format))
    finally:
        plt.close(figure)
    return out
