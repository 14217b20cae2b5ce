"""How each of the 14 CheXpert observations looks in the phantom.

Every renderer draws one finding on a drawn :class:`~doll_core.phantom.anatomy.Anatomy`
and returns its *attenuation change* ``float32 [H, W]``: exactly zero wherever the finding
does not touch the image. Renderers may also change the anatomy's organ maps (an enlarged
heart is still the heart). ``No Finding`` draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from doll_core.phantom.anatomy import LUNG_ATTENUATION, RIB_ATTENUATION, SIDES, Anatomy
from doll_core.phantom.geometry import ellipse, polyline, smooth_inside, smooth_noise

Renderer = Callable[[Anatomy, np.random.Generator], np.ndarray]


def _point_in(
    anatomy: Anatomy, region: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """A random point (u, v) where ``region`` is (almost) fully inside."""
    candidates = np.flatnonzero(region.ravel() > 0.95)
    if candidates.size == 0:
        candidates = np.flatnonzero(region.ravel() >= region.max())
    index = int(rng.choice(candidates))
    return float(anatomy.grid.u.ravel()[index]), float(anatomy.grid.v.ravel()[index])


def _zone(anatomy: Anatomy, side: int, lower: bool, upper: bool) -> np.ndarray:
    """The part of a lung in the chosen vertical zones, away from the heart."""
    lung = anatomy.lungs[side]
    top = lung.center[1] - lung.radii[1]
    height = lung.dome - top
    v = anatomy.grid.v
    weight = np.zeros_like(v)
    if upper:
        weight = np.maximum(weight, (v < top + 0.5 * height).astype(np.float32))
    if lower:
        weight = np.maximum(weight, (v > top + 0.45 * height).astype(np.float32))
    return anatomy.lung_maps[side] * weight * (1.0 - anatomy.organs["heart"])


def _blobs(
    anatomy: Anatomy,
    rng: np.random.Generator,
    region: np.ndarray,
    count: int,
    radius: tuple[float, float],
    edge: float,
) -> np.ndarray:
    """The union (max) of ``count`` soft ellipses centred in ``region``."""
    out = np.zeros(anatomy.grid.shape, dtype=np.float32)
    for _ in range(count):
        center = _point_in(anatomy, region, rng)
        radii = (float(rng.uniform(*radius)), float(rng.uniform(*radius)))
        np.maximum(
            out,
            ellipse(anatomy.grid, center, radii, edge=edge, angle=float(rng.uniform(0, np.pi))),
            out=out,
        )
    return out


def _textured(anatomy: Anatomy, rng: np.random.Generator, cells: int, depth: float) -> np.ndarray:
    """A multiplicative texture in ``[1 - depth, 1]``."""
    noise = smooth_noise(rng, anatomy.grid.shape, cells)
    return (1.0 - depth * (0.5 + 0.5 * np.tanh(noise))).astype(np.float32)


def enlarged_cardiomediastinum(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A widened upper mediastinum (both sides), above the heart."""
    heart = anatomy.heart
    assert heart is not None
    top, bottom = -0.75, heart.center[1] - 0.1
    normal = anatomy.mediastinum_width
    wide = polyline(
        anatomy.grid,
        np.array([[0.0, top], [0.0, bottom]]),
        normal * float(rng.uniform(1.6, 2.0)),
        edge=0.05,
    )
    narrow = polyline(anatomy.grid, np.array([[0.0, top], [0.0, bottom]]), normal, edge=0.05)
    return 0.16 * np.clip(wide - narrow, 0.0, None) * anatomy.body


def cardiomegaly(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """An enlarged heart (cardiothoracic ratio well above 0.5), growing to the left."""
    heart = anatomy.heart
    assert heart is not None
    enlarged = heart.draw(
        anatomy.grid,
        anatomy.edge,
        enlarge=float(rng.uniform(1.25, 1.42)),
        shift=float(rng.uniform(0.03, 0.07)),
    )
    normal = anatomy.organs["heart"]
    anatomy.organs["heart"] = np.maximum(enlarged, normal)
    return 0.3 * (anatomy.organs["heart"] - normal)


def lung_opacity(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A hazy, ill-defined opacity in one lung zone."""
    side = int(rng.choice(SIDES))
    region = _zone(anatomy, side, lower=bool(rng.random() < 0.7), upper=True)
    blob = _blobs(anatomy, rng, region, int(rng.integers(2, 4)), (0.08, 0.15), edge=0.08)
    return 0.14 * blob * _textured(anatomy, rng, 20, 0.5) * anatomy.lung_maps[side]


def lung_lesion(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """One or two well-defined round nodules inside the lungs."""
    out = np.zeros(anatomy.grid.shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 3))):
        side = int(rng.choice(SIDES))
        center = _point_in(anatomy, _zone(anatomy, side, True, True), rng)
        radius = float(rng.uniform(0.035, 0.07))
        np.maximum(
            out,
            ellipse(anatomy.grid, center, (radius, radius * rng.uniform(0.85, 1.0)), edge=0.015),
            out=out,
        )
    return 0.24 * out


def edema(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Bilateral perihilar ("bat-wing") haze, densest at the hila."""
    out = np.zeros(anatomy.grid.shape, dtype=np.float32)
    texture = _textured(anatomy, rng, 28, 0.35)
    for side in SIDES:
        hilum = anatomy.lungs[side].hilum
        reach = float(rng.uniform(0.3, 0.42))
        r2 = (
            (anatomy.grid.u - hilum[0]) ** 2 + ((anatomy.grid.v - hilum[1]) * 0.8) ** 2
        ) / reach**2
        falloff = np.clip(1.0 - r2, 0.0, None) ** 2
        out += falloff * anatomy.lung_maps[side]
    return 0.17 * out * texture


def consolidation(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A dense, lobar consolidation with darker air bronchograms inside."""
    side = int(rng.choice(SIDES))
    lower = bool(rng.random() < 0.65)
    region = _zone(anatomy, side, lower=lower, upper=not lower)
    blob = _blobs(anatomy, rng, region, int(rng.integers(3, 6)), (0.07, 0.13), edge=0.04)
    bronchi = np.zeros(anatomy.grid.shape, dtype=np.float32)
    hilum = np.array(anatomy.lungs[side].hilum)
    for _ in range(4):
        end = np.array(_point_in(anatomy, blob, rng))
        polyline(anatomy.grid, np.stack([hilum, end]), 0.007, edge=0.008, out=bronchi)
    dense = 0.26 * blob * (1.0 - 0.45 * bronchi) * _textured(anatomy, rng, 30, 0.2)
    return dense * anatomy.lung_maps[side]


def pneumonia(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Several patchy, textured opacities, mostly in the lower zones."""
    out = np.zeros(anatomy.grid.shape, dtype=np.float32)
    for side in SIDES if rng.random() < 0.4 else (int(rng.choice(SIDES)),):
        region = _zone(anatomy, side, lower=True, upper=bool(rng.random() < 0.3))
        out = np.maximum(
            out,
            _blobs(anatomy, rng, region, int(rng.integers(3, 6)), (0.035, 0.08), edge=0.05)
            * anatomy.lung_maps[side],
        )
    return 0.16 * out * _textured(anatomy, rng, 36, 0.6)


def atelectasis(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Plate-like band (or basal wedge) of collapsed lung in a lower zone."""
    side = int(rng.choice(SIDES))
    lung = anatomy.lungs[side]
    level = lung.dome - float(rng.uniform(0.1, 0.3))
    if rng.random() < 0.6:
        medial = lung.hilum[0] + side * 0.05
        lateral = lung.center[0] + side * lung.radii[0] * 0.8
        tilt = float(rng.uniform(-0.06, 0.06))
        band = polyline(
            anatomy.grid,
            np.array([[medial, level - tilt], [lateral, level + tilt]]),
            float(rng.uniform(0.014, 0.024)),
            edge=0.012,
        )
    else:
        apex = (lung.center[0] + side * lung.radii[0] * 0.2, level)
        band = ellipse(anatomy.grid, (apex[0], lung.dome), (0.12, 0.1), edge=0.03, angle=side * 0.4)
    return 0.22 * band * anatomy.lung_maps[side]


def pneumothorax(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Air between chest wall and a collapsed lung at an apex: a lucent rim without lung
    markings, bounded by the thin visceral pleural line."""
    side = int(rng.choice(SIDES))
    lung = anatomy.lungs[side]
    shrunk = smooth_inside(lung.distance(anatomy.grid, float(rng.uniform(0.8, 0.9))), 0.012)
    top = lung.center[1] - lung.radii[1]
    upper = smooth_inside(
        anatomy.grid.v - (top + float(rng.uniform(0.45, 0.75)) * (lung.dome - top)), 0.2
    )
    rim = anatomy.lung_maps[side] * (1.0 - shrunk) * upper
    pleural_line = (
        anatomy.lung_maps[side] * upper * np.clip(1.0 - np.abs(shrunk - 0.5) * 3.0, 0.0, None)
    )
    return -anatomy.markings[side] * rim - 0.12 * rim + 0.05 * pleural_line


def pleural_effusion(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Fluid at a costophrenic angle: a homogeneous opacity whose upper border is a
    meniscus, rising along the lateral chest wall; it hides the angle and the markings."""
    sides = SIDES if rng.random() < 0.3 else (int(rng.choice(SIDES)),)
    out = np.zeros(anatomy.grid.shape, dtype=np.float32)
    for side in sides:
        lung = anatomy.lungs[side]
        level = lung.dome - float(rng.uniform(0.08, 0.28))
        lateral = np.clip(side * (anatomy.grid.u - lung.center[0]) / lung.radii[0], 0.0, None)
        meniscus = level - float(rng.uniform(0.1, 0.22)) * lateral**2
        fluid = smooth_inside(meniscus - anatomy.grid.v, 0.05) * anatomy.lung_maps[side]
        out += fluid * (LUNG_ATTENUATION * 0.9) - anatomy.markings[side] * fluid
    return out


def pleural_other(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Pleural thickening: a thin band along the lateral lung border over part of its height."""
    side = int(rng.choice(SIDES))
    lung = anatomy.lungs[side]
    inner = smooth_inside(lung.distance(anatomy.grid) + float(rng.uniform(0.025, 0.04)), 0.015)
    lateral = smooth_inside(side * (lung.center[0] - anatomy.grid.u), 0.05)
    start = lung.center[1] + float(rng.uniform(-0.45, 0.1))
    window = smooth_inside(np.abs(anatomy.grid.v - start - 0.15) - 0.15, 0.06)
    return 0.14 * anatomy.lung_maps[side] * (1.0 - inner) * lateral * window


def fracture(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A rib discontinuity: a gap across one posterior rib."""
    ribs = [rib for rib in anatomy.ribs if 2 <= rib.level <= 8]
    rib = ribs[int(rng.integers(len(ribs)))]
    drawn = polyline(anatomy.grid, rib.points, rib.radius, edge=0.012)
    along = float(rng.uniform(0.35, 0.85)) * (len(rib.points) - 1)  # a point on the rib
    i = min(int(along), len(rib.points) - 2)
    position = rib.points[i] + (rib.points[i + 1] - rib.points[i]) * (along - i)
    distance = np.hypot(anatomy.grid.u - position[0], anatomy.grid.v - position[1])
    gap = smooth_inside(distance - float(rng.uniform(0.015, 0.03)), 0.008)
    return -RIB_ATTENUATION * drawn * gap * anatomy.body


def support_devices(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Radio-opaque devices: endotracheal tube, central line, pacemaker with lead, or
    ECG electrodes (one to three of them)."""
    grid = anatomy.grid
    out = np.zeros(grid.shape, dtype=np.float32)
    kinds = rng.choice(
        ["tube", "line", "pacemaker", "electrodes"], size=int(rng.integers(1, 4)), replace=False
    )
    heart = anatomy.heart
    assert heart is not None
    for kind in kinds:
        if kind == "tube":
            tip = float(rng.uniform(-0.55, -0.42))
            layer = polyline(grid, np.array([[0.005, -1.05], [0.0, tip]]), 0.013, edge=0.006)
            out = np.maximum(out, 0.35 * layer)
        elif kind == "line":
            side = int(rng.choice(SIDES))
            points = np.array(
                [
                    [side * 0.55, -0.8],
                    [side * 0.25, -0.62],
                    [side * 0.04, -0.45],
                    [0.02 * side, float(rng.uniform(-0.2, -0.05))],
                ]
            )
            out = np.maximum(out, 0.4 * polyline(grid, points, 0.006, edge=0.005))
        elif kind == "pacemaker":
            box = (0.5 + float(rng.uniform(-0.05, 0.05)), -0.7 + float(rng.uniform(-0.03, 0.05)))
            can = ellipse(grid, box, (0.09, 0.06), edge=0.01)
            lead = polyline(
                grid,
                np.array(
                    [box, [0.25, -0.5], [0.05, -0.3], [heart.center[0], heart.center[1] + 0.05]]
                ),
                0.006,
                edge=0.005,
            )
            out = np.maximum(out, 0.7 * can)
            out = np.maximum(out, 0.4 * lead)
        else:
            for _ in range(int(rng.integers(2, 5))):
                center = (float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.6, 0.4)))
                ring = ellipse(grid, center, (0.028, 0.028), edge=0.008)
                out = np.maximum(out, 0.3 * ring)
    return out * anatomy.body


def covid_pattern(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """COVID-19 pneumonia: bilateral, peripheral, lower-zone ground-glass opacities."""
    out = np.zeros(anatomy.grid.shape, dtype=np.float32)
    for side in SIDES:
        lung = anatomy.lungs[side]
        peripheral = smooth_inside(side * (lung.center[0] - anatomy.grid.u) + 0.05, 0.1)
        region = _zone(anatomy, side, lower=True, upper=bool(rng.random() < 0.3)) * peripheral
        count = int(rng.integers(2, 5))
        out = np.maximum(
            out,
            _blobs(anatomy, rng, region, count, (0.05, 0.11), edge=0.06) * anatomy.lung_maps[side],
        )
    return 0.11 * out * _textured(anatomy, rng, 32, 0.55)


#: Renderer of each observation that draws something (``No Finding`` draws nothing).
RENDERERS: dict[str, Renderer] = {
    "Enlarged Cardiomediastinum": enlarged_cardiomediastinum,
    "Cardiomegaly": cardiomegaly,
    "Lung Opacity": lung_opacity,
    "Lung Lesion": lung_lesion,
    "Edema": edema,
    "Consolidation": consolidation,
    "Pneumonia": pneumonia,
    "Atelectasis": atelectasis,
    "Pneumothorax": pneumothorax,
    "Pleural Effusion": pleural_effusion,
    "Pleural Other": pleural_other,
    "Fracture": fracture,
    "Support Devices": support_devices,
}
