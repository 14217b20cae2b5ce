"""Finding names of ground-truth sources, mapped to the 14 CheXpert observations.

One table serves every source (CheXlocalize, NIH ChestX-ray14, COCO category names). A
name is compared in lower case with ``_`` read as a space; it maps to

1. the CheXpert observation of that name (``"cardiomegaly"`` -> ``"Cardiomegaly"``);
2. else the observation :data:`ALIASES` gives it;
3. else itself (stripped): a finding without a CheXpert counterpart keeps its own name,
   e.g. NIH's ``"Emphysema"``, ``"Fibrosis"``, ``"Hernia"``.

The aliases, and why:

=====================  ==================  ================================================
source name            observation         reason
=====================  ==================  ================================================
Airspace Opacity       Lung Opacity        CheXlocalize's name for CheXpert's column
Effusion               Pleural Effusion    NIH's name; torchxrayvision renames CheXpert's
                                           "Pleural Effusion" to "Effusion" to align them
Infiltrate             Lung Opacity        the CheXpert labeler counts "infiltrate" and
Infiltration                               "infiltration" as Lung Opacity mentions
                                           (torchxrayvision keeps "Infiltration" as a
                                           label of its own; CheXpert has none)
Mass, Nodule           Lung Lesion         the CheXpert labeler's Lung Lesion mentions
                                           are "mass", "nodule", "nodular opacity", ...
Pleural_Thickening     Pleural Other       "pleural thickening" is a Pleural Other mention
                                           of the CheXpert labeler
=====================  ==================  ================================================

Several source names of one image that map to one observation (an NIH Mass and Nodule
box) are one mask: their union.
"""

from __future__ import annotations

from doll_core.observations import OBSERVATIONS

#: CheXlocalize's ten localization tasks, spelled as its files spell them.
CHEXLOCALIZE_TASKS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Airspace Opacity",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Support Devices",
)

#: Source names (normalised: lower case, ``_`` as space) -> CheXpert observation.
ALIASES: dict[str, str] = {
    "airspace opacity": "Lung Opacity",
    "effusion": "Pleural Effusion",
    "infiltrate": "Lung Opacity",
    "infiltration": "Lung Opacity",
    "mass": "Lung Lesion",
    "nodule": "Lung Lesion",
    "pleural thickening": "Pleural Other",
}

_BY_KEY = {name.lower(): name for name in OBSERVATIONS}
#: CheXpert observation -> CheXlocalize's spelling, where they differ.
_CHEXLOCALIZE_SPELLING = {"Lung Opacity": "Airspace Opacity"}


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def observation_name(name: str) -> str:
    """The observation a source's finding ``name`` stands for (see the module docstring)."""
    key = _key(name)
    return _BY_KEY.get(key) or ALIASES.get(key) or name.strip()


def chexlocalize_name(observation: str) -> str:
    """The name CheXlocalize's files give ``observation`` (``"Lung Opacity"`` ->
    ``"Airspace Opacity"``; the others as they are)."""
    return _CHEXLOCALIZE_SPELLING.get(observation, observation)


#: The ten CheXlocalize tasks as observations.
CHEXLOCALIZE_OBSERVATIONS: tuple[str, ...] = tuple(observation_name(t) for t in CHEXLOCALIZE_TASKS)
