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
``NEGATIVE`` for every other labelled observation. With ``hierarchy``, a positive child
also makes its parent positive, as CheXpert's labeler does (:data:`PARENTS`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from doll_core.data.chexpert_format import NEGATIVE, POSITIVE
from doll_core.errors import DollError
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS

#: CheXpert's observation hierarchy (Irvin et al. 2019, fig. 2): a child positive makes its
#: parent positive.
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
            (:data:`PARENTS`), where the parent is labelled. Default: ``True``.
        ignored (tuple[str, ...]): finding names that are not findings (``""``, PadChest's
            ``"exclude"``) and are neither mapped nor counted as unmapped. Default: none.
        case_sensitive (bool): compare finding names as written. Default: ``False``.
    """

    dataset: str
    findings: Mapping[str, str | Sequence[str]]
    unlabelled: tuple[str, ...] = ()
    hierarchy: bool = True
    ignored: tuple[str, ...] = ()
    case_sensitive: bool = False
    _lookup: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _ignored: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        targets = {name: _targets(value) for name, value in self.findings.items()}
        mapped = {obs for observations in targets.values() for obs in observations}
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
        object.__setattr__(self, "_ignored", frozenset(self._key(n) for n in self.ignored))

    def _key(self, name: str) -> str:
        name = name.strip()
        return name if self.case_sensitive else name.lower()

    @property
    def labelled(self) -> np.ndarray:
        """``bool [14]``: which observations the dataset labels."""
        return np.array([name not in self.unlabelled for name in OBSERVATIONS], dtype=bool)

    def codes(self, findings: Iterable[str], unmapped: Counter[str] | None = None) -> list[int]:
        """The 14 CheXpert codes of one image that lists ``findings`` (the findings
        present): ``POSITIVE`` where a finding maps, ``NEGATIVE`` elsewhere (unlabelled
        observations too: their mask is what leaves them out). Findings that map to
        nothing are counted in ``unmapped``, once per image."""
        present = [False] * NUM_OBSERVATIONS
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
                continue
            for index in indices:
                present[index] = True
        if self.hierarchy:
            for child, parent in PARENTS.items():
                parent_index = OBSERVATIONS.index(parent)
                if present[OBSERVATIONS.index(child)] and parent not in self.unlabelled:
                    present[parent_index] = True
        return [POSITIVE if flag else NEGATIVE for flag in present]

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
