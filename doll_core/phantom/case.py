"""One phantom radiograph: anatomy, findings, exposure, and exact masks.

The image is ``develop(attenuation)`` plus quantum noise, quantised to 8 bits, where
``develop`` is a blur (the detector's point spread) followed by a window and a gamma.
A finding's mask is the set of pixels whose noise-free developed value changes by at least
half a grey level (0.5 / 255) when that finding's drawing is removed: exactly the pixels
its rendering changed, and nothing else. A hierarchy parent's mask adds its children's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from doll_core.phantom.anatomy import Anatomy, draw_anatomy
from doll_core.phantom.findings import RENDERERS, Renderer
from doll_core.phantom.geometry import gaussian_blur
from doll_core.phantom.labels import Findings, FindingsConfig, findings_from, sample_findings

#: a pixel belongs to a finding's mask when the finding moves it by at least this much
VISIBLE_CHANGE = 0.5 / 255.0
ORGANS = ("right lung", "left lung", "heart", "right clavicle", "left clavicle")


@dataclass(frozen=True)
class Exposure:
    """How the detector turns attenuation into a picture."""

    blur_px: float
    low: float
    high: float
    gamma: float
    noise: float

    @classmethod
    def sample(cls, rng: np.random.Generator, size: int) -> Exposure:
        return cls(
            blur_px=float(rng.uniform(0.4, 1.1)) * size / 256,
            low=float(rng.uniform(-0.03, 0.06)),
            high=float(rng.uniform(0.95, 1.15)),
            gamma=float(rng.uniform(0.8, 1.3)),
            noise=float(rng.uniform(0.006, 0.02)),
        )

    def tone(self, blurred: np.ndarray) -> np.ndarray:
        """Window and gamma of a blurred attenuation map, ``float32`` in ``[0, 1]``."""
        scaled = np.clip((blurred - self.low) / (self.high - self.low), 0.0, 1.0)
        return (scaled**self.gamma).astype(np.float32)


@dataclass
class Case:
    """A rendered case: the 8-bit image, its findings, their masks and organ masks."""

    image: np.ndarray  # uint8 [H, W]
    clean: np.ndarray  # float32 [H, W] in [0, 1]: developed, before noise
    intensity: np.ndarray  # float32 [H, W] in [0, 1]: with noise, before 8-bit quantisation
    findings: Findings
    masks: dict[str, np.ndarray]  # observation -> bool [H, W], for every present one
    organs: dict[str, np.ndarray]  # ORGANS -> bool [H, W]
    extra_mask: np.ndarray | None  # bool [H, W] of the extra renderer, if any


def organ_masks(anatomy: Anatomy) -> dict[str, np.ndarray]:
    """Binary organ masks: lung fields leave out the heart, as SCR's annotations do."""
    heart = anatomy.organs["heart"] > 0.5
    return {
        "right lung": (anatomy.organs["right lung"] > 0.5) & ~heart,
        "left lung": (anatomy.organs["left lung"] > 0.5) & ~heart,
        "heart": heart,
        "right clavicle": anatomy.organs["right clavicle"] > 0.5,
        "left clavicle": anatomy.organs["left clavicle"] > 0.5,
    }


def render_case(
    rng: np.random.Generator,
    size: int,
    config: FindingsConfig,
    *,
    findings: Iterable[str] | None = None,
    extra: Renderer | None = None,
) -> Case:
    """Draw a case at ``size x size``: sampled findings (or exactly ``findings``), and
    optionally one ``extra`` renderer (e.g. the COVID-19 pattern) whose mask is returned
    as ``extra_mask``."""
    # separate streams: the same seed gives the same anatomy, exposure and noise whatever
    # the findings, so a case with and without a finding differ by that finding alone
    anatomy_rng, findings_rng, exposure_rng = rng.spawn(3)
    anatomy = draw_anatomy(anatomy_rng, size)
    chosen = (
        sample_findings(findings_rng, config)
        if findings is None
        else findings_from(set(findings), config)
    )
    deltas = {
        name: config.contrast * RENDERERS[name](anatomy, findings_rng) for name in chosen.drawn
    }
    if extra is not None:
        deltas["<extra>"] = extra(anatomy, findings_rng)
    attenuation = anatomy.attenuation()
    for delta in deltas.values():
        attenuation += delta
    exposure = Exposure.sample(exposure_rng, size)
    blurred = gaussian_blur(attenuation, exposure.blur_px)
    clean = exposure.tone(blurred)

    own: dict[str, np.ndarray] = {}
    for name, delta in deltas.items():
        without = exposure.tone(blurred - gaussian_blur(delta, exposure.blur_px))
        own[name] = np.abs(clean - without) >= VISIBLE_CHANGE
    masks = {name: own.get(name, np.zeros(clean.shape, dtype=bool)) for name in chosen.present}
    for parent in _bottom_up(chosen):
        for child in chosen.children.get(parent, ()):
            masks[parent] = masks[parent] | masks[child]

    noise = exposure_rng.standard_normal(clean.shape).astype(np.float32)
    intensity = np.clip(clean + exposure.noise * np.sqrt(clean + 0.05) * noise, 0.0, 1.0)
    return Case(
        image=np.round(intensity * 255.0).astype(np.uint8),
        clean=clean,
        intensity=intensity,
        findings=chosen,
        masks={name: masks[name] for name in chosen.present},
        organs=organ_masks(anatomy),
        extra_mask=own.get("<extra>"),
    )


def _bottom_up(findings: Findings) -> list[str]:
    """Parents ordered so that each comes after all of its descendants."""
    depth: dict[str, int] = {}

    def height(name: str) -> int:
        if name not in depth:
            kids = findings.children.get(name, ())
            depth[name] = 1 + max((height(k) for k in kids), default=-1)
        return depth[name]

    return sorted(findings.children, key=height)
