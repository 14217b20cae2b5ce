"""PadChest reader: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` and its image
folders.

Each row's ``Labels`` is a Python-style list of the findings a radiologist's report
named (``['pleural effusion', 'cardiomegaly']``), read with :func:`ast.literal_eval`
(literals only, never code) and mapped by :data:`PADCHEST_MAPPING`, exact name by exact
name (PadChest names 193 findings; the ones that stand for one of the 14 observations are
listed there, the rest are counted as unmapped). A row whose list names no finding at all
(empty, unreadable, or only ``unchanged``, ``exclude``, ``suboptimal study``) is blank for
every observation: it is not evidence that nothing is there. Images are the 16-bit PNGs
in ``<root>/<ImageDir>/<ImageID>`` (read as value / 65535). PadChest has no split of its
own: ``train``, ``valid`` and ``test`` divide it by patient
(:func:`~doll_plugins.datasets.mapped.patient_split`, 80/10/10).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from doll_core.data.chexpert_format import BLANK
from doll_core.data.mapping import LabelMapping
from doll_core.data.paths import contained_path
from doll_core.data.samples import (
    LabelOptions,
    bytes_array,
    check_choice,
    is_plain_file_name,
)
from doll_core.errors import DollError
from doll_core.observations import NUM_OBSERVATIONS
from doll_plugins.datasets.mapped import (
    VALID_FRACTION,
    MappedClassification,
    csv_rows,
    patient_split,
)

CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
SPLITS = ("all", "train", "valid", "test")
#: each split's share of the patients
SPLIT_FRACTIONS = {"valid": VALID_FRACTION, "test": VALID_FRACTION,
                   "train": 1 - 2 * VALID_FRACTION}  # fmt: skip
#: projections that are frontal views
FRONTAL = ("PA", "AP", "AP_horizontal")
#: a ``Labels`` cell that holds no list (the released CSV writes ``nan`` for 103 rows)
MISSING = ("", "nan")
#: entries of ``Labels`` that are not findings
NOT_FINDINGS = ("", "unchanged", "exclude", "suboptimal study")


#: PadChest's findings -> DoLL's observations (Bustos et al. 2020's hierarchy names,
#: matched exactly), by the rule of :data:`~doll_core.data.mapping.LABELER_PHRASES`: a
#: finding maps when the CheXpert labeler's mention phrases name it ("effusion" in
#: "loculated fissural effusion", "tube" in "NSG tube") or it is the observation itself
#: (``normal``: PadChest's own label for a normal study; "mediastinal enlargement"). A
#: finding that bears on an observation without that evidence (a sign, a cause, a kind the
#: labeler does not list) leaves the observation unlabelled on its image (``related``).
PADCHEST_MAPPING = LabelMapping(
    dataset="PadChest",
    findings={
        **dict.fromkeys(["normal"], "No Finding"),
        **dict.fromkeys(
            ["mediastinal enlargement", "superior mediastinal enlargement"],
            "Enlarged Cardiomediastinum",
        ),
        **dict.fromkeys(["cardiomegaly"], "Cardiomegaly"),
        **dict.fromkeys(
            [
                "infiltrates",
                "interstitial pattern",
                "reticular interstitial pattern",
                "reticulonodular interstitial pattern",
                "increased density",
                "miliary opacities",
            ],
            "Lung Opacity",
        ),
        **dict.fromkeys(["nodule", "multiple nodules", "pulmonary mass", "mass"], "Lung Lesion"),
        **dict.fromkeys(["pulmonary edema"], "Edema"),
        **dict.fromkeys(["consolidation"], "Consolidation"),
        **dict.fromkeys(["pneumonia", "atypical pneumonia"], "Pneumonia"),
        **dict.fromkeys(
            [
                "atelectasis",
                "laminar atelectasis",
                "lobar atelectasis",
                "segmental atelectasis",
                "round atelectasis",
                "total atelectasis",
                "atelectasis basal",
            ],
            "Atelectasis",
        ),
        **dict.fromkeys(["pneumothorax", "hydropneumothorax"], "Pneumothorax"),
        **dict.fromkeys(
            ["pleural effusion", "loculated pleural effusion", "loculated fissural effusion"],
            "Pleural Effusion",
        ),
        **dict.fromkeys(
            [
                "pleural thickening",
                "apical pleural thickening",
                "calcified pleural thickening",
            ],
            "Pleural Other",
        ),
        **dict.fromkeys(
            [
                "fracture",
                "rib fracture",
                "callus rib fracture",
                "clavicle fracture",
                "humeral fracture",
                "vertebral fracture",
            ],
            "Fracture",
        ),
        **dict.fromkeys(
            [
                "NSG tube",
                "endotracheal tube",
                "tracheostomy tube",
                "chest drain tube",
                "central venous catheter",
                "central venous catheter via jugular vein",
                "central venous catheter via subclavian vein",
                "central venous catheter via umbilical vein",
                "reservoir central venous catheter",
                "catheter",
                "pacemaker",
                "dual chamber device",
                "single chamber device",
                "electrical device",
                "artificial heart valve",
                "artificial mitral heart valve",
                "artificial aortic heart valve",
                "ventriculoperitoneal drain tube",
                "gastrostomy tube",
                "nephrostomy tube",
            ],
            "Support Devices",
        ),
    },
    related={
        "alveolar pattern": "Lung Opacity",
        "ground glass pattern": "Lung Opacity",
        "lung metastasis": "Lung Lesion",
        "cavitation": "Lung Lesion",
        "kerley lines": "Edema",
        "air bronchogram": "Consolidation",
        "costophrenic angle blunting": "Pleural Effusion",
        "pleural plaques": "Pleural Other",
        "calcified pleural plaques": "Pleural Other",
        "fissure thickening": "Pleural Other",
        "pulmonary fibrosis": "Pleural Other",  # the labeler's "fibrosis", but not pleural
        "double J stent": "Support Devices",
    },
    ignored=NOT_FINDINGS,
)
_COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "Labels")


def find_labels_csv(root: Path) -> Path:
    """``root/PADCHEST_...csv`` or its ``.gz``."""
    for name in (CSV_NAME, CSV_NAME + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DollError(f"PadChest: neither {CSV_NAME} nor {CSV_NAME}.gz in {root}")


def parse_label_list(text: str) -> list[str] | None:
    """The findings of a ``Labels`` cell (``[]`` for an empty one, or ``nan`` as the
    released CSV writes 103 missing lists), or ``None`` when it is not a list of strings."""
    if text.strip() in MISSING:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return None
    return [v.strip() for v in value]


class PadChest(MappedClassification):
    """PadChest (160,861 images of 67,000 patients, 193 report findings, 14 mapped)."""

    mapping = PADCHEST_MAPPING

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "all",
        split_seed: int = 0,
        frontal_only: bool = False,
        csv_path: str | Path | None = None,
        **options: Unpack[LabelOptions],
    ) -> None:
        """:param root: the folder of the image folders (``0/`` ... ``54/``) and the CSV.
        :param split: ``all``, or ``train`` / ``valid`` / ``test`` by patient.
        :param split_seed: which patients go to which split.
        :param frontal_only: keep only PA, AP and AP_horizontal projections.
        :param blank: what a row that names no finding becomes (``zeros``, or ``ignore``
            to leave it out of the loss).
        :param csv_path: read this CSV instead of ``root``'s.
        """
        super().__init__(root, **options)
        self.csv_path = Path(csv_path) if csv_path is not None else find_labels_csv(self.root)
        if not self.csv_path.is_file():
            raise DollError(f"PadChest CSV not found: {self.csv_path}")
        ids: list[bytes] = []
        folders: list[bytes] = []
        codes: list[list[int]] = []
        patients: list[str] = []
        projections: list[str] = []
        #: rows whose ``Labels`` is not a list of strings, and rows where it is empty
        self.unreadable_labels = self.empty_labels = 0
        blank_row = [BLANK] * NUM_OBSERVATIONS
        not_findings = {name.lower() for name in NOT_FINDINGS}
        for line, row in csv_rows(self.csv_path, _COLUMNS):
            image, folder = row["ImageID"].strip(), row["ImageDir"].strip()
            if not is_plain_file_name(image) or "\x00" in folder:
                raise DollError(f"{self.csv_path}, line {line}: not an image name: {image!r}")
            findings = parse_label_list(row["Labels"])
            if findings is None:
                self.unreadable_labels += 1
                findings = []
            elif row["Labels"].strip() in MISSING:
                self.empty_labels += 1
            named = list(dict.fromkeys(f for f in findings if f.lower() not in not_findings))
            self.findings.update(named)
            codes.append(self.mapping.codes(findings, self.unmapped) if named else blank_row)
            ids.append(image.encode("utf-8"))
            folders.append(folder.encode("utf-8"))
            patients.append(row["PatientID"].strip())
            projections.append(row["Projection"].strip())
        self._ids, self._folders = bytes_array(ids), bytes_array(folders)
        self._codes = np.array(codes, dtype=np.int8).reshape(-1, NUM_OBSERVATIONS)
        self._frontal = np.array([p in FRONTAL for p in projections], dtype=bool)
        self._patients = np.array(patients, dtype=object)
        self._projections = np.array(projections, dtype=object)
        self.split = check_choice("split", split, SPLITS)
        keep = self._frontal.copy() if frontal_only else np.ones(len(self._ids), dtype=bool)
        if self.split != "all":
            keep &= patient_split(self._patients.tolist(), SPLIT_FRACTIONS, split_seed) == split
        self._keep(keep)

    def _keep(self, keep: np.ndarray) -> None:
        super()._keep(keep)
        self._folders = self._folders[keep]
        self._patients, self._projections = self._patients[keep], self._projections[keep]

    def image_path(self, index: int) -> Path:
        folder = bytes(self._folders[index]).decode("utf-8")
        return contained_path(self.root, Path(folder) / self.sample_id(index))

    def summary(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "csv": str(self.csv_path),
            **super().summary(),
            "patients": len(set(self._patients.tolist())),
            "projections": dict(Counter(self._projections.tolist()).most_common()),
            "unreadable_labels": self.unreadable_labels,
            "empty_labels": self.empty_labels,
            "findings": dict(self.findings.most_common()),
        }
