"""MIMIC-CXR-JPG reader: its three CSVs and ``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``.

``mimic-cxr-2.0.0-metadata.csv`` lists every image (``dicom_id``, ``subject_id``,
``study_id``, ``ViewPosition``); ``mimic-cxr-2.0.0-chexpert.csv`` (or ``-negbio.csv``,
``labeler = "negbio"``) labels every *study* with CheXpert's 14 observations, coded as
CheXpert codes them (1, 0, -1 uncertain, blank), so every image gets its study's labels
and CheXpert's uncertainty policies apply unchanged; ``mimic-cxr-2.0.0-split.csv`` gives
each image's split (``train``, ``validate``, ``test``). Any of the three may be ``.gz``.
An image whose study has no labels row is blank for every observation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from doll_core.data.chexpert_format import BLANK, parse_label
from doll_core.data.mapping import LabelMapping
from doll_core.data.paths import contained_path
from doll_core.data.samples import LabelOptions, bytes_array, check_choice
from doll_core.errors import DollError
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from doll_plugins.datasets.mapped import MappedClassification, csv_rows, numeric_identifier

SPLITS = ("all", "train", "validate", "test")
#: other names of a split (DoLL's classifier training asks for ``valid`` by default)
SPLIT_ALIASES = {"valid": "validate"}
LABELERS = ("chexpert", "negbio")
PREFIX = "mimic-cxr-2.0.0"
#: views that are frontal
FRONTAL = ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD")
#: MIMIC's label columns are CheXpert's 14 observations, by name
MIMIC_MAPPING = LabelMapping("MIMIC-CXR", {name: name for name in OBSERVATIONS})


def find_table(root: Path, name: str) -> Path:
    """``root/mimic-cxr-2.0.0-<name>.csv`` or its ``.gz``."""
    for candidate in (root / f"{PREFIX}-{name}.csv", root / f"{PREFIX}-{name}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise DollError(f"MIMIC-CXR-JPG: neither {PREFIX}-{name}.csv nor its .gz in {root}")


class MIMICCXRJPG(MappedClassification):
    """MIMIC-CXR-JPG (377,110 images of 227,827 studies, CheXpert's 14 labels per study)."""

    mapping = MIMIC_MAPPING

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "all",
        labeler: str = "chexpert",
        frontal_only: bool = False,
        **options: Unpack[LabelOptions],
    ) -> None:
        """:param root: the release folder (the CSVs and ``files/``).
        :param split: ``all``, or ``train`` / ``validate`` (or ``valid``) / ``test`` by the
            split CSV.
        :param labeler: whose labels: ``chexpert`` or ``negbio``.
        :param frontal_only: keep only frontal views (:data:`FRONTAL`).
        :param uncertainty, blank: CheXpert's policies for -1 and blank cells.
        """
        super().__init__(root, **options)
        self.split = check_choice("split", SPLIT_ALIASES.get(split, split), SPLITS)
        self.labeler = check_choice("labeler", labeler, LABELERS)
        labels = self._study_labels(find_table(self.root, self.labeler))
        splits = self._splits(find_table(self.root, "split")) if self.split != "all" else {}
        metadata = find_table(self.root, "metadata")
        ids: list[bytes] = []
        studies: list[tuple[int, int]] = []
        views: list[str] = []
        unlabelled = [BLANK] * NUM_OBSERVATIONS
        self.images_without_labels = 0
        for line, row in csv_rows(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
            dicom = row["dicom_id"].strip()
            if not dicom or not dicom.replace("-", "").isalnum() or not dicom.isascii():
                raise DollError(f"{metadata}, line {line}: not a dicom_id: {dicom!r}")
            if self.split != "all" and splits.get(dicom) != self.split:
                continue
            subject = numeric_identifier(row["subject_id"], metadata, line, "subject_id")
            study = numeric_identifier(row["study_id"], metadata, line, "study_id")
            ids.append(dicom.encode("ascii"))
            studies.append((subject, study))
            views.append(row["ViewPosition"].strip())
        codes = []
        for key in studies:
            found = labels.get(key)
            if found is None:
                self.images_without_labels += 1
            codes.append(found if found is not None else unlabelled)
        self._ids = bytes_array(ids)
        self._codes = np.array(codes, dtype=np.int8).reshape(-1, NUM_OBSERVATIONS)
        self._studies = np.array(studies, dtype=np.int64).reshape(-1, 2)
        self._views = np.array(views, dtype=object)
        self._frontal = np.array([v in FRONTAL for v in views], dtype=bool)
        if frontal_only:
            self._keep(self._frontal.copy())

    @staticmethod
    def _study_labels(path: Path) -> dict[tuple[int, int], list[int]]:
        """``(subject_id, study_id) -> 14 codes`` in DoLL's order (the CSV's is alphabetical)."""
        labels: dict[tuple[int, int], list[int]] = {}
        for line, row in csv_rows(path, ("subject_id", "study_id", *OBSERVATIONS)):
            key = (
                numeric_identifier(row["subject_id"], path, line, "subject_id"),
                numeric_identifier(row["study_id"], path, line, "study_id"),
            )
            try:
                labels[key] = [parse_label(row[name]) for name in OBSERVATIONS]
            except ValueError as exc:
                raise DollError(f"{path}, line {line}: {exc}") from None
        return labels

    @staticmethod
    def _splits(path: Path) -> dict[str, str]:
        return {row["dicom_id"].strip(): row["split"].strip()
                for _, row in csv_rows(path, ("dicom_id", "split"))}  # fmt: skip

    def _keep(self, keep: np.ndarray) -> None:
        super()._keep(keep)
        self._studies, self._views = self._studies[keep], self._views[keep]

    def image_path(self, index: int) -> Path:
        subject, study = (int(v) for v in self._studies[index])
        patient = f"p{subject}"
        relative = Path("files", patient[:3], patient, f"s{study}", f"{self.sample_id(index)}.jpg")
        return contained_path(self.root, relative)

    def summary(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "labeler": self.labeler,
            **super().summary(),
            "patients": len(set(self._studies[:, 0].tolist())),
            "studies": len({tuple(s) for s in self._studies.tolist()}),
            "images_without_labels": self.images_without_labels,
            "views": dict(Counter(self._views.tolist()).most_common()),
        }
