"""Drawing primitives of the phantom, on a normalised grid.

Coordinates: ``u`` runs from -1 (image left, the patient's right) to 1 (image right, the
patient's left); ``v`` from -1 (top) to 1 (bottom). Every primitive returns a float32 map
in ``[0, 1]`` with *compact support*: exactly zero beyond a soft border of known width,
so that a finding's mask can be exactly the pixels its drawing changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional


@dataclass(frozen=True)
class Grid:
    """Normalised pixel-centre coordinates ``u, v`` (``float32 [H, W]``) of one image,
    after the case's pose (scale, shift, rotation) is undone."""

    u: np.ndarray
    v: np.ndarray
    scale: float
    shift: tuple[float, float]
    angle: float

    @classmethod
    def make(
        cls,
        size: int,
        *,
        scale: float = 1.0,
        shift: tuple[float, float] = (0.0, 0.0),
        angle: float = 0.0,
    ) -> Grid:
        """A ``size x size`` grid; anatomy drawn on it appears scaled by ``scale``,
        moved by ``shift`` and rotated by ``angle`` radians."""
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        x, y = np.meshgrid(axis, axis)
        x, y = x - shift[0], y - shift[1]
        c, s = np.cos(angle), np.sin(angle)
        u = (c * x + s * y) / scale
        v = (-s * x + c * y) / scale
        return cls(u.astype(np.float32), v.astype(np.float32), scale, shift, angle)

    @property
    def shape(self) -> tuple[int, int]:
        return self.u.shape

    @property
    def pixel(self) -> float:
        """The size of one pixel in normalised units."""
        return 2.0 / self.u.shape[1] / self.scale

    def box(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
        """Row and column slices covering the normalised box ``[u0, u1] x [v0, v1]`` (its
        corners mapped through the pose, plus a pixel of margin)."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        corners = np.array([[u0, v0], [u0, v1], [u1, v0], [u1, v1]], dtype=np.float64)
        x = self.scale * (c * corners[:, 0] - s * corners[:, 1]) + self.shift[0]
        y = self.scale * (s * corners[:, 0] + c * corners[:, 1]) + self.shift[1]
        height, width = self.shape
        cols = (x + 1.0) / 2.0 * width - 0.5
        rows = (y + 1.0) / 2.0 * height - 0.5
        c0, c1 = max(int(np.floor(cols.min())) - 1, 0), min(int(np.ceil(cols.max())) + 2, width)
        r0, r1 = max(int(np.floor(rows.min())) - 1, 0), min(int(np.ceil(rows.max())) + 2, height)
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def smooth_inside(distance: np.ndarray, width: float) -> np.ndarray:
    """1 where ``distance <= -width/2``, 0 where ``>= width/2``, a smoothstep between.
    ``distance`` is a signed distance (negative inside)."""
    t = np.clip(0.5 - distance / max(width, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def ellipse_distance(
    u: np.ndarray,
    v: np.ndarray,
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float = 0.0,
) -> np.ndarray:
    """Approximate signed distance to an ellipse (negative inside)."""
    du, dv = u - center[0], v - center[1]
    c, s = np.cos(angle), np.sin(angle)
    x = c * du + s * dv
    y = -s * du + c * dv
    rho = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2)
    return ((rho - 1.0) * min(radii)).astype(np.float32)


def ellipse(
    grid: Grid,
    center: tuple[float, float],
    radii: tuple[float, float],
    *,
    edge: float,
    angle: float = 0.0,
) -> np.ndarray:
    """A soft-edged filled ellipse, ``float32 [H, W]``."""
    return smooth_inside(ellipse_distance(grid.u, grid.v, center, radii, angle), edge)


def segment_distance(
    u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each point to segment ``a-b``, and the position ``t`` in [0, 1]
    of the nearest point along it."""
    du, dv = b[0] - a[0], b[1] - a[1]
    length2 = max(du * du + dv * dv, 1e-12)
    t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / length2, 0.0, 1.0)
    return np.hypot(u - (a[0] + t * du), v - (a[1] + t * dv)), t


def polyline(
    grid: Grid,
    points: np.ndarray,
    radius: float | np.ndarray,
    *,
    edge: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """A soft tube of ``radius`` (one per point, linearly tapered, or one for all) along
    the polyline ``points [N, 2]`` (u, v); segments are merged with ``max``. Only the
    bounding box of each segment is computed."""
    out = np.zeros(grid.shape, dtype=np.float32) if out is None else out
    radii = np.broadcast_to(np.asarray(radius, dtype=np.float32), (len(points),))
    margin = float(radii.max()) + edge
    for i in range(len(points) - 1):
        a, b = tuple(points[i]), tuple(points[i + 1])
        rows, cols = grid.box(
            min(a[0], b[0]) - margin,
            max(a[0], b[0]) + margin,
            min(a[1], b[1]) - margin,
            max(a[1], b[1]) + margin,
        )
        if rows.stop == rows.start or cols.stop == cols.start:
            continue
        distance, t = segment_distance(grid.u[rows, cols], grid.v[rows, cols], a, b)
        local_radius = radii[i] + (radii[i + 1] - radii[i]) * t
        np.maximum(
            out[rows, cols], smooth_inside(distance - local_radius, edge), out=out[rows, cols]
        )
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise: a ``cells x cells`` random lattice upsampled
    bicubically to ``shape``. ``float32 [H, W]``."""
    lattice = torch.from_numpy(rng.standard_normal((1, 1, cells + 3, cells + 3)).astype(np.float32))
    big = functional.interpolate(
        lattice,
        size=(shape[0] + 2 * shape[0] // cells, shape[1] + 2 * shape[1] // cells),
        mode="bicubic",
        align_corners=False,
    )
    top, left = shape[0] // cells, shape[1] // cells
    return big[0, 0, top : top + shape[0], left : left + shape[1]].numpy().copy()


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders (linear, so it commutes with sums)."""
    if sigma_px <= 0:
        return image.astype(np.float32, copy=True)
    radius = max(1, int(np.ceil(3.0 * sigma_px)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = torch.from_numpy(kernel / kernel.sum())
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    tensor = functional.pad(tensor, (radius, radius, radius, radius), mode="reflect")
    tensor = functional.conv2d(tensor, kernel.view(1, 1, 1, -1))
    tensor = functional.conv2d(tensor, kernel.view(1, 1, -1, 1))
    return tensor[0, 0].numpy().copy()
