"""The 14 CheXpert observations, in the order of CheXpert's CSV columns."""

from __future__ import annotations

#: The 14 observation names exactly as CheXpert's ``train.csv`` / ``valid.csv`` headers
#: spell them, in column order. Observation index ``k`` everywhere in DoLL (labels ``[14]``,
#: explainer targets, label-store channels) refers to ``OBSERVATIONS[k]``.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

NUM_OBSERVATIONS: int = len(OBSERVATIONS)
