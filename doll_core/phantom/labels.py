"""Which findings a phantom case has, and how its report labels them.

A case's findings are drawn independently with per-observation prevalence, then
co-occurrence rules add findings that tend to come together (drawn on their own), and the
CheXpert hierarchy marks parents of present children as present too (a consolidation *is*
a lung opacity; a parent's mask includes its children's). The report then labels each
observation 1 / 0 / -1 / blank with configurable uncertain and blank rates; ``exact``
labels (for the validation split, like CheXpert's radiologist-labelled ``valid.csv``) are
1 / 0 only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from doll_core.data.chexpert_format import BLANK, NEGATIVE, POSITIVE, UNCERTAIN
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

DEFAULT_PREVALENCE: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.06,
    "Cardiomegaly": 0.14,
    "Lung Opacity": 0.1,
    "Lung Lesion": 0.1,
    "Edema": 0.1,
    "Consolidation": 0.08,
    "Pneumonia": 0.08,
    "Atelectasis": 0.12,
    "Pneumothorax": 0.1,
    "Pleural Effusion": 0.16,
    "Pleural Other": 0.05,
    "Fracture": 0.07,
    "Support Devices": 0.25,
}
#: (given, then, probability): ``then`` is drawn too, with its own appearance.
DEFAULT_COOCCURRENCE: tuple[tuple[str, str, float], ...] = (
    ("Edema", "Pleural Effusion", 0.4),
    ("Edema", "Cardiomegaly", 0.3),
    ("Pneumonia", "Pleural Effusion", 0.2),
    ("Atelectasis", "Pleural Effusion", 0.25),
)
#: child -> parent of CheXpert's label hierarchy.
DEFAULT_HIERARCHY: dict[str, str] = {
    "Edema": "Lung Opacity",
    "Consolidation": "Lung Opacity",
    "Pneumonia": "Consolidation",
    "Lung Lesion": "Lung Opacity",
    "Atelectasis": "Lung Opacity",
    "Cardiomegaly": "Enlarged Cardiomediastinum",
}


@dataclass(frozen=True)
class FindingsConfig:
    """How often findings occur and how reports label them."""

    prevalence: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    cooccurrence: tuple[tuple[str, str, float], ...] = DEFAULT_COOCCURRENCE
    hierarchy: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HIERARCHY))
    #: chance that a present finding is reported uncertain (-1)
    uncertain_rate: float = 0.1
    #: chance that an absent finding is reported uncertain (-1)
    uncertain_negative_rate: float = 0.02
    #: chance that an absent finding is not mentioned (blank)
    blank_rate: float = 0.5
    #: factor on every drawn finding's attenuation change (1: as drawn; >1: easier to see)
    contrast: float = 1.0

    def __post_init__(self) -> None:
        drawable = set(OBSERVATIONS) - {NO_FINDING}
        names = set(self.prevalence) | {n for g, t, _ in self.cooccurrence for n in (g, t)}
        names |= set(self.hierarchy) | set(self.hierarchy.values())
        unknown = sorted(names - drawable)
        if unknown:
            raise DollError(
                f"phantom findings name unknown observations {unknown}; "
                f"choose from: {', '.join(sorted(drawable))}"
            )
        rates = {
            **{f"prevalence of {k!r}": v for k, v in self.prevalence.items()},
            **{f"co-occurrence {g!r} -> {t!r}": p for g, t, p in self.cooccurrence},
            "uncertain_rate": self.uncertain_rate,
            "uncertain_negative_rate": self.uncertain_negative_rate,
            "blank_rate": self.blank_rate,
        }
        for label, value in rates.items():
            if not 0.0 <= float(value) <= 1.0:
                raise DollError(f"{label} must be a probability in [0, 1], got {value!r}")
        if not 0.0 < float(self.contrast) <= 10.0:
            raise DollError(f"finding contrast must be in (0, 10], got {self.contrast!r}")
        if self.uncertain_negative_rate + self.blank_rate > 1.0:
            raise DollError("uncertain_negative_rate + blank_rate must not exceed 1")
        for child in self.hierarchy:
            chain, node = [child], child
            while node in self.hierarchy:
                node = self.hierarchy[node]
                if node in chain:
                    raise DollError(f"phantom hierarchy has a cycle: {' -> '.join([*chain, node])}")
                chain.append(node)


@dataclass(frozen=True)
class Findings:
    """The findings of one case: ``drawn`` ones have their own appearance; ``present``
    adds the hierarchy parents; ``children[p]`` are the present children of ``p``."""

    drawn: tuple[str, ...]
    present: tuple[str, ...]
    children: Mapping[str, tuple[str, ...]]


def _ordered(names: set[str]) -> tuple[str, ...]:
    return tuple(name for name in OBSERVATIONS if name in names)


def sample_findings(rng: np.random.Generator, config: FindingsConfig) -> Findings:
    """Draw one case's findings."""
    drawn = {name for name in OBSERVATIONS if rng.random() < config.prevalence.get(name, 0.0)}
    for given, then, probability in config.cooccurrence:
        if given in drawn and then not in drawn and rng.random() < probability:
            drawn.add(then)
    return findings_from(drawn, config)


def findings_from(drawn: set[str] | tuple[str, ...], config: FindingsConfig) -> Findings:
    """Complete a set of drawn findings with their hierarchy parents."""
    present = set(drawn)
    children: dict[str, set[str]] = {}
    for child in list(present):
        node = child
        while node in config.hierarchy:
            parent = config.hierarchy[node]
            children.setdefault(parent, set()).add(node)
            present.add(parent)
            node = parent
    return Findings(
        drawn=_ordered(set(drawn)),
        present=_ordered(present),
        children={p: _ordered(c) for p, c in children.items()},
    )


def report(
    rng: np.random.Generator, present: tuple[str, ...], config: FindingsConfig, *, exact: bool
) -> list[int]:
    """Label codes (``OBSERVATIONS`` order) a report would give the case.

    ``No Finding`` is positive when nothing but support devices is present, and otherwise
    blank (``exact``: negative), as CheXpert's labeller does.
    """
    codes: list[int] = []
    pathology = [name for name in present if name != SUPPORT_DEVICES]
    for name in OBSERVATIONS:
        if name == NO_FINDING:
            codes.append(POSITIVE if not pathology else (NEGATIVE if exact else BLANK))
        elif exact:
            codes.append(POSITIVE if name in present else NEGATIVE)
        elif name in present:
            codes.append(UNCERTAIN if rng.random() < config.uncertain_rate else POSITIVE)
        else:
            draw = rng.random()
            if draw < config.uncertain_negative_rate:
                codes.append(UNCERTAIN)
            elif draw < config.uncertain_negative_rate + config.blank_rate:
                codes.append(BLANK)
            else:
                codes.append(NEGATIVE)
    return codes
