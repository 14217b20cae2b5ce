"""NIH ChestX-ray14 reader: ``Data_Entry_2017*.csv`` and the ``images*/`` folders.

The release's CSV (``Data_Entry_2017.csv``, or ``Data_Entry_2017_v2020.csv``, plain or
``.gz``) has an irregular header: ``OriginalImage[Width,Height]`` names two columns with
one name (and the 2017 file ends each row with an empty cell), so columns are read by the
names before them. ``Finding Labels`` lists the findings present, ``|``-separated, or
``No Finding``; NIH's 14 findings map to the observations by :data:`NIH_MAPPING`. The
images are in ``images_001/images/`` ... ``images_012/images/`` (or one ``images/``
folder); they are located on first read, so a folder with only the CSV can be inspected.
``split = "test"`` is the release's ``test_list.txt``; ``"train"`` and ``"valid"`` divide
its ``train_val_list.txt`` by patient (:func:`~doll_plugins.datasets.mapped.patient_split`,
:data:`~doll_plugins.datasets.mapped.VALID_FRACTION` of the patients in ``valid``), so no
patient is in two splits and model choices never see the test list.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from doll_core.data.imageio import ImageReadError
from doll_core.data.mapping import LabelMapping
from doll_core.data.paths import contained_path
from doll_core.data.samples import (
    LabelOptions,
    bytes_array,
    check_choice,
    is_plain_file_name,
)
from doll_core.errors import DollError
from doll_plugins.datasets.mapped import (
    VALID_FRACTION,
    MappedClassification,
    csv_rows,
    numeric_identifier,
    patient_split,
    read_text_file,
)

SPLITS = ("all", "train", "valid", "test")
#: the file of each split's image names, in the release's root
SPLIT_LISTS = {"train": "train_val_list.txt", "valid": "train_val_list.txt",
               "test": "test_list.txt"}  # fmt: skip
#: NIH's findings -> DoLL's observations, by the rule of
#: :data:`~doll_core.data.mapping.LABELER_PHRASES` (the CheXpert labeler's mention phrases
#: name each: "infiltration" is a Lung Opacity phrase, "mass" and "nodule" Lung Lesion ones,
#: "pleural thickening" a Pleural Other one). Fibrosis matches the labeler's Pleural Other
#: phrase "fibrosis", but NIH's Fibrosis is interstitial, not pleural: Pleural Other is left
#: unlabelled on its images (``related``). Emphysema and Hernia have no counterpart (counted
#: as unmapped). NIH does not label Enlarged Cardiomediastinum, Fracture or Support Devices.
NIH_MAPPING = LabelMapping(
    dataset="NIH ChestX-ray14",
    findings={
        "No Finding": "No Finding",
        "Atelectasis": "Atelectasis",
        "Cardiomegaly": "Cardiomegaly",
        "Consolidation": "Consolidation",
        "Edema": "Edema",
        "Effusion": "Pleural Effusion",
        "Infiltration": "Lung Opacity",
        "Mass": "Lung Lesion",
        "Nodule": "Lung Lesion",
        "Pleural_Thickening": "Pleural Other",
        "Pneumonia": "Pneumonia",
        "Pneumothorax": "Pneumothorax",
    },
    unlabelled=("Enlarged Cardiomediastinum", "Fracture", "Support Devices"),
    related={"Fibrosis": "Pleural Other"},
)
_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")


def find_data_entry(root: Path) -> Path:
    """The newest ``Data_Entry_2017*.csv[.gz]`` in ``root``."""
    found = sorted(
        p for p in root.glob("Data_Entry_2017*.csv*") if p.name.endswith((".csv", ".csv.gz"))
    )
    if not found:
        raise DollError(f"NIH ChestX-ray14: no Data_Entry_2017*.csv in {root}")
    return found[-1]


class NIHChestXray14(MappedClassification):
    """NIH ChestX-ray14 (112,120 frontal images, 14 findings mapped to 11 observations)."""

    mapping = NIH_MAPPING

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "all",
        csv_path: str | Path | None = None,
        split_seed: int = 0,
        **options: Unpack[LabelOptions],
    ) -> None:
        """:param root: the release folder (the CSV, ``images_*/``, the split lists).
        :param split: ``all``; ``test`` by the release's list; ``train`` / ``valid``, its
            other list divided by patient.
        :param split_seed: which patients go to ``valid``.
        :param csv_path: read this CSV instead of the newest ``Data_Entry_2017*.csv``.
        :param uncertainty, blank: as CheXpert's (NIH has neither: every labelled
            observation is positive or negative).
        """
        super().__init__(root, **options)
        self.split = check_choice("split", split, SPLITS)
        self.csv_path = Path(csv_path) if csv_path is not None else find_data_entry(self.root)
        if not self.csv_path.is_file():
            raise DollError(f"NIH ChestX-ray14 CSV not found: {self.csv_path}")
        ids: list[bytes] = []
        codes: list[list[int]] = []
        patients: list[int] = []
        views: list[bytes] = []
        for line, row in csv_rows(self.csv_path, _COLUMNS):
            name = row["Image Index"].strip()
            if not is_plain_file_name(name):
                raise DollError(f"{self.csv_path}, line {line}: not an image name: {name!r}")
            findings = list(dict.fromkeys(f.strip() for f in row["Finding Labels"].split("|")))
            findings = [f for f in findings if f]
            self.findings.update(findings)
            codes.append(self.mapping.codes(findings, self.unmapped))
            ids.append(name.encode("utf-8"))
            patients.append(
                numeric_identifier(row["Patient ID"], self.csv_path, line, "Patient ID")
            )
            views.append(row["View Position"].strip().encode("utf-8"))
        self._ids = bytes_array(ids)
        self._codes = np.array(codes, dtype=np.int8).reshape(-1, len(self._labelled))
        self._frontal = np.ones(len(ids), dtype=bool)  # NIH holds frontal views only
        self._patients = np.array(patients, dtype=np.int64)
        self._views = bytes_array(views)
        if self.split != "all":
            keep = self._in_split_list()
            if self.split in ("train", "valid"):
                fractions = {"valid": VALID_FRACTION, "train": 1 - VALID_FRACTION}
                split_of = patient_split([str(p) for p in self._patients], fractions, split_seed)
                keep &= split_of == self.split
            self._keep(keep)
        self._folders: dict[str, Path] | None = None

    def _in_split_list(self) -> np.ndarray:
        path = self.root / SPLIT_LISTS[self.split]
        if not path.is_file():
            raise DollError(f"NIH ChestX-ray14 split {self.split!r} needs {path}")
        names = {n.strip().encode("utf-8") for n in read_text_file(path).split()}
        return np.array([bytes(i) in names for i in self._ids], dtype=bool)

    def _keep(self, keep: np.ndarray) -> None:
        super()._keep(keep)
        self._patients, self._views = self._patients[keep], self._views[keep]

    def _locate(self) -> dict[str, Path]:
        """Image name -> its folder, from ``images*/`` and ``images*/images/``."""
        folders: dict[str, Path] = {}
        for top in sorted(self.root.glob("images*")):
            for folder in (top / "images", top):
                if folder.is_dir():
                    with os.scandir(folder) as entries:
                        for entry in entries:
                            if entry.name.endswith(".png"):
                                folders.setdefault(entry.name, folder)
        return folders

    def image_path(self, index: int) -> Path:
        if self._folders is None:
            self._folders = self._locate()
        name = self.sample_id(index)
        folder = self._folders.get(name)
        if folder is None:
            raise ImageReadError(self.root / name, "not found in any images*/ folder")
        return contained_path(self.root, folder.relative_to(self.root) / name)

    def summary(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "csv": str(self.csv_path),
            **super().summary(),
            "patients": len(set(self._patients.tolist())),
            "views": dict(Counter(bytes(v).decode("utf-8") for v in self._views).most_common()),
            "findings": dict(self.findings.most_common()),
        }
