"""How another dataset's findings become DoLL's 14 CheXpert observations.

NIH ChestX-ray14, PadChest, MIMIC-CXR and a user's own CSV each name their findings their
own way. A :class:`LabelMapping` says, for one dataset, which of its finding names stand
for which observation (several may: NIH's ``Mass`` and ``Nodule`` are both CheXpert's
``Lung Lesion``; one finding may also stand for several observations), and which
observations the dataset does not label at all: those get ``label_mask = False`` on every
image, so no loss or score ever reads them. Findings that map to nothing are counted, so
``doll data inspect`` shows what was left out.

Labels are CheXpert codes (:mod:`doll_core.data.chexpert_format`): a dataset whose labels
list only the findings present (NIH, PadChest) gives ``POSITIVE`` for a mapped finding and
``NEGATIVE`` for every other labelled observation. A finding that bears on an observation
without naming it by the source's rule (PadChest's "costophrenic angle blunting" is a sign
of effusion, not a mention of one) is ``related``: the observation is :data:`UNSTATED` on
that image (unlabelled, whatever the blank policy) rather than positive or negative.

The built-in tables follow one rule (:data:`LABELER_PHRASES`): a finding stands for an
observation when it is the observation itself or when one of the CheXpert labeler's mention
phrases for it names the finding, as the labeler would match it in a report. The labeler
adds no parent from a child (its ``stages/aggregate.py``), and CheXpert's own CSV leaves
Enlarged Cardiomediastinum blank on 24,616 of 27,000 Cardiomegaly-positive rows, so no
hierarchy is applied unless a user's CSV asks for it (``hierarchy``, :data:`PARENTS`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from doll_core.data.chexpert_format import NEGATIVE, POSITIVE
from doll_core.errors import DollError
from doll_core.interfaces import optional_factory_member
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS

#: An observation the source does not state for one image, though it names a related
#: finding: unlabelled there (``label_mask`` False), never positive or negative. Not one
#: of CheXpert's codes: only the mapped readers write it.
UNSTATED = -3

#: The CheXpert labeler's mention phrases per observation (stanfordmlgroup/chexpert-labeler
#: ``phrases/mention/*.txt`` at 7cd62b2 and 6dd0efa; Lung Opacity, Pneumothorax and Support
#: Devices from ``mention_phrases/`` at 849bb96), matched as substrings of the lowered
#: text, ``_`` meaning a word boundary. The evidence the built-in tables cite.
LABELER_PHRASES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("_mediastinum", "cardiomediastinum", "contour",
                                   "mediastinal configuration", "mediastinal silhouette",
                                   "pericardial silhouette",
                                   "cardiac silhouette and vascularity"),
    "Cardiomegaly": ("cardiomegaly", "the heart", "heart size", "cardiac enlargement",
                     "cardiac size", "cardiac shadow", "cardiac contour",
                     "cardiac silhouette", "enlarged heart"),
    "Lung Opacity": ("opaci", "decreased translucency", "increased density",
                     "airspace disease", "air-space disease", "air space disease",
                     "infiltrate", "infiltration", "interstitial marking",
                     "interstitial pattern", "interstitial lung", "reticular pattern",
                     "reticular marking", "reticulation", "parenchymal scarring",
                     "peribronchial thickening", "wall thickening", "scar"),
    "Lung Lesion": ("mass", "nodular density", "nodular densities", "nodular opacity",
                    "nodular opacities", "nodular opacification", "nodule", "lump",
                    "cavitary lesion", "carcinoma", "neoplasm", "tumor"),
    "Edema": ("edema", "heart failure", "chf", "vascular congestion", "pulmonary congestion",
              "indistinctness", "vascular prominence"),
    "Consolidation": ("consolidat",),
    "Pneumonia": ("pneumonia", "infection", "infectious process", "infectious"),
    "Atelectasis": ("atelecta", "collapse"),
    "Pneumothorax": ("pneumothorax", "pneumothoraces"),
    "Pleural Effusion": ("pleural fluid", "effusion"),
    "Pleural Other": ("pleural thickening", "fibrosis", "fibrothorax", "pleural scar",
                      "pleural parenchymal scar", "pleuro-parenchymal scar",
                      "pleuro-pericardial scar"),
    "Fracture": ("fracture",),
    "Support Devices": ("pacer", "_line_", "lines", "picc", "tube", "valve", "catheter",
                        "pacemaker", "hardware", "arthroplast", "marker", "icd", "defib",
                        "device", "drain_", "plate", "screw", "cannula", "apparatus", "coil",
                        "support", "equipment", "mediport"),
}  # fmt: skip


def labeler_phrase_for(finding: str, observation: str) -> str | None:
    """The labeler's mention phrase for ``observation`` that names ``finding``, or
    ``None`` (:data:`LABELER_PHRASES`; ``_`` is a word boundary)."""
    text = f"_{'_'.join(finding.lower().replace('-', ' - ').split())}_".replace("_-_", "-")
    for phrase in LABELER_PHRASES.get(observation, ()):
        if phrase.replace(" ", "_") in text:
            return phrase
    return None


#: CheXpert's observation hierarchy (Irvin et al. 2019, fig. 2); a child positive makes its
#: parent positive, only where a user's CSV asks for it (``hierarchy = true``).
PARENTS: dict[str, str] = {
    "Edema": "Lung Opacity",
    "Consolidation": "Lung Opacity",
    "Pneumonia": "Lung Opacity",
    "Lung Lesion": "Lung Opacity",
    "Atelectasis": "Lung Opacity",
    "Cardiomegaly": "Enlarged Cardiomediastinum",
}


@dataclass(frozen=True)
class LabelMapping:
    """One dataset's finding names -> DoLL's observations.

    Args:
        dataset (str): the dataset's name, for messages.
        findings (Mapping[str, str | Sequence[str]]): a finding name as the dataset writes
            it (compared after ``strip()`` and, unless ``case_sensitive``, ``lower()``) ->
            the observation it stands for, or a list of the observations it stands for.
        unlabelled (tuple[str, ...]): observations the dataset does not label; every image
            gets ``label_mask = False`` there. Default: none.
        hierarchy (bool): a positive child observation makes its parent positive
            (:data:`PARENTS`), where the parent is labelled. Default: ``False`` (the
            CheXpert labeler has no such rule).
        related (Mapping[str, str | Sequence[str]]): a finding name -> the observation(s)
            it bears on without naming them: on an image listing it, those observations
            are :data:`UNSTATED` unless a mapped finding makes them positive. Default: none.
        ignored (tuple[str, ...]): finding names that are not findings (``""``, PadChest's
            ``"exclude"``) and are neither mapped nor counted as unmapped. Default: none.
        case_sensitive (bool): compare finding names as written. Default: ``False``.
    """

    dataset: str
    findings: Mapping[str, str | Sequence[str]]
    unlabelled: tuple[str, ...] = ()
    hierarchy: bool = False
    ignored: tuple[str, ...] = ()
    case_sensitive: bool = False
    related: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    _lookup: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _related: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _ignored: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        targets = {name: _targets(value) for name, value in self.findings.items()}
        related = {name: _targets(value) for name, value in self.related.items()}
        mapped = {obs for observations in targets.values() for obs in observations}
        mapped_and_related = sorted(set(targets) & set(related))
        if mapped_and_related:
            raise DollError(f"{self.dataset} mapping both maps and relates {mapped_and_related}")
        mapped |= {obs for observations in related.values() for obs in observations}
        unknown = sorted({*mapped, *self.unlabelled} - set(OBSERVATIONS), key=str)
        if unknown:
            raise DollError(f"{self.dataset} mapping names unknown observations {unknown}")
        empty = sorted(name for name, observations in targets.items() if not observations)
        if empty:
            raise DollError(f"{self.dataset} mapping maps {empty} to no observation")
        both = sorted(mapped & set(self.unlabelled))
        if both:
            raise DollError(f"{self.dataset} mapping both maps and leaves unlabelled {both}")
        lookup = {
            self._key(name): tuple(OBSERVATIONS.index(obs) for obs in observations)
            for name, observations in targets.items()
        }
        object.__setattr__(self, "_lookup", lookup)
        object.__setattr__(
            self,
            "_related",
            {
                self._key(name): tuple(OBSERVATIONS.index(obs) for obs in observations)
                for name, observations in related.items()
            },
        )
        object.__setattr__(self, "_ignored", frozenset(self._key(n) for n in self.ignored))

    def _key(self, name: str) -> str:
        name = name.strip()
        return name if self.case_sensitive else name.lower()

    @property
    def labelled(self) -> np.ndarray:
        """``bool [14]``: which observations the dataset labels."""
        return np.array([name not in self.unlabelled for name in OBSERVATIONS], dtype=bool)

    def codes(self, findings: Iterable[str], unmapped: Counter[str] | None = None) -> list[int]:
        """The 14 codes of one image that lists ``findings`` (the findings present):
        ``POSITIVE`` where a finding maps, :data:`UNSTATED` where only a ``related`` one
        does, ``NEGATIVE`` elsewhere (unlabelled observations too: their mask is what
        leaves them out). Findings that map to nothing, related or not, are counted in
        ``unmapped``, once per image."""
        present = [False] * NUM_OBSERVATIONS
        unstated = [False] * NUM_OBSERVATIONS
        seen: set[str] = set()
        for name in findings:
            key = self._key(name)
            if key in seen:  # a finding listed twice counts once
                continue
            seen.add(key)
            if key in self._ignored:
                continue
            indices = self._lookup.get(key)
            if indices is None:
                if unmapped is not None:
                    unmapped[name.strip()] += 1
                for index in self._related.get(key, ()):
                    unstated[index] = True
                continue
            for index in indices:
                present[index] = True
        if self.hierarchy:
            for child, parent in PARENTS.items():
                parent_index = OBSERVATIONS.index(parent)
                if present[OBSERVATIONS.index(child)] and parent not in self.unlabelled:
                    present[parent_index] = True
        return [
            POSITIVE if flag else UNSTATED if vague else NEGATIVE
            for flag, vague in zip(present, unstated, strict=True)
        ]

    def digest(self) -> str:
        """16 hex digits of the rules (findings, related, unlabelled, ignored, hierarchy,
        case): what a classifier trained on this dataset's labels was taught, so that a
        stage made under other rules is not reused (:func:`label_rules_key`)."""
        rules = {
            "findings": {k: list(_targets(v)) for k, v in self.findings.items()},
            "related": {k: list(_targets(v)) for k, v in self.related.items()},
            "unlabelled": list(self.unlabelled),
            "ignored": list(self.ignored),
            "hierarchy": self.hierarchy,
            "case_sensitive": self.case_sensitive,
        }
        text = json.dumps(rules, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def table(self) -> list[tuple[str, list[str]]]:
        """``(observation, the finding names mapped to it)`` for every observation, in
        DoLL's order (``[]`` for one the dataset does not label): the documented table."""
        by_observation: dict[str, list[str]] = {name: [] for name in OBSERVATIONS}
        for finding, value in self.findings.items():
            for observation in _targets(value):
                by_observation[observation].append(finding)
        return [(name, sorted(by_observation[name])) for name in OBSERVATIONS]


def _targets(value: str | Sequence[str]) -> tuple[str, ...]:
    """The observation(s) one finding stands for, as a tuple without repeats."""
    return (value,) if isinstance(value, str) else tuple(dict.fromkeys(value))


def label_rules_key(factory: object, options: Mapping[str, object]) -> str | None:
    """The digest of the label rules a dataset ``factory`` applies with ``options``: its
    ``label_rules(**options)`` if it has one (the mapped readers, ``multi``), else ``None``
    (a dataset whose labels are its files' own, as CheXpert's)."""
    rules = optional_factory_member(factory, "dataset", "label_rules")
    return rules(**options) if callable(rules) else None
