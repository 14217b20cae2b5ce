"""Normal chest anatomy of the phantom: a PA radiograph drawn as an attenuation map.

Brighter means more attenuation (bone, heart, soft tissue), darker means air (lungs,
trachea, outside the body). Structures overlap additively, as in projection radiography:
ribs cross the lungs, the spine runs behind the heart, clavicles cross the apices. Every
case varies in pose (scale, shift, rotation), organ sizes and positions, rib spacing,
vessel pattern and texture. Sides: ``side = -1`` is the image left, the patient's right;
``side = +1`` the image right, the patient's left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from doll_core.phantom.geometry import (
    Grid,
    ellipse,
    ellipse_distance,
    polyline,
    smooth_inside,
    smooth_noise,
)

SIDES = (-1, 1)
SIDE_NAMES = {-1: "right", 1: "left"}  # the patient's side
LUNG_ATTENUATION = 0.3
RIB_ATTENUATION = 0.08


@dataclass
class LungShape:
    """One lung: an ellipse cut from below by its hemidiaphragm ``v = dome + k (u - peak)^2``."""

    side: int
    center: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    dome: float
    curvature: float
    peak: float
    hilum: tuple[float, float]

    def distance(self, grid: Grid, shrink: float = 1.0) -> np.ndarray:
        """Signed distance to the lung (negative inside); ``shrink < 1`` shrinks the lung
        towards its hilum (a collapsed lung)."""
        center = (
            self.hilum[0] + (self.center[0] - self.hilum[0]) * shrink,
            self.hilum[1] + (self.center[1] - self.hilum[1]) * shrink,
        )
        radii = (self.radii[0] * shrink, self.radii[1] * shrink)
        inside_ellipse = ellipse_distance(grid.u, grid.v, center, radii, self.angle)
        below = self.hilum[1] + (self.dome - self.hilum[1]) * shrink
        diaphragm = below + self.curvature * (grid.u - self.peak) ** 2
        return np.maximum(inside_ellipse, grid.v - diaphragm)

    def diaphragm(self, u: np.ndarray) -> np.ndarray:
        return self.dome + self.curvature * (u - self.peak) ** 2


@dataclass
class HeartShape:
    center: tuple[float, float]
    radii: tuple[float, float]
    angle: float

    def draw(self, grid: Grid, edge: float, enlarge: float = 1.0, shift: float = 0.0) -> np.ndarray:
        center = (self.center[0] + shift, self.center[1])
        radii = (self.radii[0] * enlarge, self.radii[1] * enlarge)
        return ellipse(grid, center, radii, edge=edge, angle=self.angle)


@dataclass
class Rib:
    side: int
    level: int  # 0 = the highest posterior rib drawn
    points: np.ndarray  # [N, 2] centre line (u, v), medial to lateral
    radius: float


@dataclass
class Anatomy:
    """A drawn normal chest: attenuation layers, organ maps and the geometry findings need."""

    grid: Grid
    edge: float
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    organs: dict[str, np.ndarray] = field(default_factory=dict)
    lungs: dict[int, LungShape] = field(default_factory=dict)
    lung_maps: dict[int, np.ndarray] = field(default_factory=dict)
    markings: dict[int, np.ndarray] = field(default_factory=dict)
    heart: HeartShape | None = None
    heart_map: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    clavicles: dict[int, np.ndarray] = field(default_factory=dict)
    ribs: list[Rib] = field(default_factory=list)
    mediastinum_width: float = 0.1
    body: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def attenuation(self) -> np.ndarray:
        """The sum of all layers, ``float32 [H, W]``."""
        total = np.zeros(self.grid.shape, dtype=np.float32)
        for layer in self.layers.values():
            total += layer
        return total


def _curve(points: np.ndarray, count: int) -> np.ndarray:
    """``count`` points on the quadratic Bezier curve through control ``points [3, 2]``."""
    t = np.linspace(0.0, 1.0, count)[:, None]
    return (1 - t) ** 2 * points[0] + 2 * (1 - t) * t * points[1] + t**2 * points[2]


def _vessels(
    grid: Grid, rng: np.random.Generator, hilum: tuple[float, float], side: int
) -> np.ndarray:
    """Branching vessels radiating from the hilum: the lung markings (before clipping)."""
    tree = np.zeros(grid.shape, dtype=np.float32)
    for alpha in np.linspace(-1.25, 1.3, 11) + rng.uniform(-0.1, 0.1, 11):
        length = rng.uniform(0.2, 0.42) * (1.1 - 0.3 * abs(np.sin(alpha)))
        direction = np.array([side * np.cos(alpha), np.sin(alpha)])
        bend = rng.uniform(-0.25, 0.25)
        normal = np.array([-direction[1], direction[0]])
        start = np.array(hilum) + direction * 0.02
        mid = start + direction * length * 0.5 + normal * bend * length * 0.3
        end = start + direction * length
        trunk = _curve(np.stack([start, mid, end]), 4)
        polyline(grid, trunk, np.linspace(0.009, 0.003, 4), edge=0.01, out=tree)
        branch_dir = direction + normal * rng.choice([-1, 1]) * rng.uniform(0.4, 0.8)
        branch_start = trunk[1]
        branch_end = branch_start + branch_dir / np.linalg.norm(branch_dir) * length * 0.45
        polyline(
            grid,
            np.stack([branch_start, branch_end]),
            np.array([0.006, 0.0025]),
            edge=0.006,
            out=tree,
        )
    return tree


def draw_anatomy(rng: np.random.Generator, size: int) -> Anatomy:
    """Sample and draw one normal chest at ``size x size`` pixels (the parts in a fixed
    order, so that a seed always draws the same chest)."""
    grid = Grid.make(
        size,
        scale=float(rng.uniform(0.86, 1.04)),
        shift=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.04, 0.06))),
        angle=float(rng.uniform(-0.08, 0.08)),
    )
    edge = float(rng.uniform(0.025, 0.045))  # soft, low-contrast borders
    anatomy = Anatomy(grid=grid, edge=edge)
    for part in (_body, _lungs, _abdomen, _heart, _airway_and_spine, _clavicles, _ribs):
        part(anatomy, rng)
    return anatomy


def _body(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Soft tissue of the trunk and the shoulders."""
    grid = anatomy.grid
    body = ellipse(grid, (0.0, 0.3), (float(rng.uniform(0.98, 1.1)), 1.35), edge=0.14)
    shoulders = sum(ellipse(grid, (s * 0.95, -0.9), (0.3, 0.25), edge=0.12) for s in SIDES)
    anatomy.body = body
    anatomy.layers["soft tissue"] = (
        0.45 * body + 0.1 * shoulders * body + 0.025 * smooth_noise(rng, grid.shape, 10) * body
    )


def _lungs(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Lungs, each cut by its hemidiaphragm (the right one a little higher), with their
    parenchyma and vessel markings."""
    grid, edge, shape = anatomy.grid, anatomy.edge, anatomy.grid.shape
    lungs = np.zeros(shape, dtype=np.float32)
    for side in SIDES:
        cx = side * float(rng.uniform(0.37, 0.43))
        cy = float(rng.uniform(-0.1, -0.02))
        radii = (float(rng.uniform(0.29, 0.35)), float(rng.uniform(0.62, 0.72)))
        dome = cy + radii[1] * float(rng.uniform(0.62, 0.74)) - (0.035 if side < 0 else 0.0)
        shape_ = LungShape(
            side=side,
            center=(cx, cy),
            radii=radii,
            angle=side * float(rng.uniform(0.03, 0.12)),
            dome=dome,
            curvature=float(rng.uniform(0.9, 1.6)),
            peak=cx - side * 0.03,
            hilum=(side * float(rng.uniform(0.16, 0.21)), cy + float(rng.uniform(0.0, 0.07))),
        )
        lung = smooth_inside(shape_.distance(grid), edge)
        anatomy.lungs[side] = shape_
        anatomy.lung_maps[side] = lung
        lungs += lung
    base_gradient = 1.0 + 0.18 * np.clip(grid.v, -1.0, 1.0)  # lower zones a little denser
    anatomy.layers["lungs"] = -LUNG_ATTENUATION * lungs / base_gradient
    anatomy.layers["parenchyma"] = 0.03 * smooth_noise(rng, shape, 22) * lungs
    for side in SIDES:
        shape_ = anatomy.lungs[side]
        marks = 0.06 * _vessels(grid, rng, shape_.hilum, side) * anatomy.lung_maps[side]
        anatomy.markings[side] = marks
    anatomy.layers["markings"] = anatomy.markings[-1] + anatomy.markings[1]


def _abdomen(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """The abdomen below the diaphragm, with the gastric bubble under the left
    hemidiaphragm (no random draw)."""
    grid, u, v = anatomy.grid, anatomy.grid.u, anatomy.grid.v
    diaphragm = np.where(u < 0, anatomy.lungs[-1].diaphragm(u), anatomy.lungs[1].diaphragm(u))
    abdomen = smooth_inside(diaphragm - v, 0.03) * anatomy.body
    left = anatomy.lungs[1]
    bubble = ellipse(grid, (left.peak + 0.02, left.dome + 0.1), (0.075, 0.045), edge=0.03)
    anatomy.layers["abdomen"] = 0.06 * abdomen - 0.12 * bubble * abdomen


def _heart(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """The heart (its apex to the patient's left, below), the mediastinum and the aorta."""
    grid = anatomy.grid
    heart = HeartShape(
        center=(float(rng.uniform(0.06, 0.12)), float(rng.uniform(0.26, 0.34))),
        radii=(float(rng.uniform(0.29, 0.34)), float(rng.uniform(0.2, 0.24))),
        angle=float(rng.uniform(0.3, 0.55)),
    )
    anatomy.heart = heart
    anatomy.heart_map = heart.draw(grid, anatomy.edge)
    anatomy.layers["heart"] = 0.3 * anatomy.heart_map
    anatomy.mediastinum_width = float(rng.uniform(0.08, 0.105))
    mediastinum = polyline(
        grid,
        np.array([[0.0, -1.0], [0.01, heart.center[1]]]),
        anatomy.mediastinum_width,
        edge=0.05,
    )
    aorta = ellipse(grid, (0.085, -0.3 + float(rng.uniform(-0.03, 0.03))), (0.055, 0.05), edge=0.03)
    anatomy.layers["mediastinum"] = 0.2 * mediastinum + 0.08 * aorta


def _airway_and_spine(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """The trachea with both main bronchi, and the spine with its vertebrae."""
    grid = anatomy.grid
    carina = (0.0, float(rng.uniform(-0.38, -0.3)))
    airway = polyline(grid, np.array([[0.0, -1.05], carina]), 0.027, edge=0.02)
    for side in SIDES:
        polyline(
            grid,
            np.array([carina, [side * 0.13, carina[1] + 0.13]]),
            np.array([0.02, 0.014]),
            edge=0.02,
            out=airway,
        )
    anatomy.layers["airway"] = -0.13 * airway
    spine = polyline(grid, np.array([[0.0, -1.1], [0.0, 1.1]]), 0.058, edge=0.02)
    period = float(rng.uniform(0.11, 0.14))
    vertebrae = 0.78 + 0.22 * np.cos(2 * np.pi * (grid.v - float(rng.uniform(0, period))) / period)
    anatomy.layers["spine"] = 0.09 * spine * vertebrae


def _clavicles(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Both clavicles (bone: sharper edges)."""
    for side in SIDES:
        control = np.array(
            [
                [side * rng.uniform(0.06, 0.09), rng.uniform(-0.67, -0.6)],
                [side * 0.32, rng.uniform(-0.78, -0.7)],
                [side * rng.uniform(0.58, 0.66), rng.uniform(-0.86, -0.77)],
            ]
        )
        anatomy.clavicles[side] = polyline(
            anatomy.grid, _curve(control, 6), np.linspace(0.03, 0.021, 6), edge=0.012
        )
    anatomy.layers["clavicles"] = 0.2 * (anatomy.clavicles[-1] + anatomy.clavicles[1])


def _ribs(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Ten posterior and six faint anterior ribs a side, then the organ masks."""
    grid, shape = anatomy.grid, anatomy.grid.shape
    ribs = np.zeros(shape, dtype=np.float32)
    spacing = float(rng.uniform(0.105, 0.125))
    for side in SIDES:
        for i in range(10):
            medial_v = -0.74 + i * spacing
            lateral_u = 0.66 + 0.16 * np.sin(np.pi * (i + 1.5) / 12)
            t = np.linspace(0.0, 1.0, 6)
            points = np.stack(
                [side * (0.07 + t * (lateral_u - 0.07)), medial_v - 0.1 * t + 0.34 * t**3], axis=1
            )
            rib = Rib(side=side, level=i, points=points, radius=0.017)
            anatomy.ribs.append(rib)
            polyline(grid, points, rib.radius, edge=0.012, out=ribs)
        for i in range(6):  # faint anterior ribs, sloping down towards the midline
            lateral_v = -0.6 + i * spacing * 1.15
            points = np.array([[side * 0.7, lateral_v], [side * 0.18, lateral_v + 0.3]])
            anatomy.layers.setdefault("anterior ribs", np.zeros(shape, dtype=np.float32))
            anatomy.layers["anterior ribs"] += 0.045 * polyline(grid, points, 0.02, edge=0.02)
    anatomy.layers["ribs"] = RIB_ATTENUATION * ribs * anatomy.body
    anatomy.organs = {
        "right lung": anatomy.lung_maps[-1],
        "left lung": anatomy.lung_maps[1],
        "heart": anatomy.heart_map,
        "right clavicle": anatomy.clavicles[-1],
        "left clavicle": anatomy.clavicles[1],
    }
