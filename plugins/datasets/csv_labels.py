"""A user's own CSV of image-level labels (``dataset = "csv"``), mapped to the 14
observations by a table the user gives.

Layout: a CSV with a header row and one row per image, and the images in a folder::

    ROOT/labels.csv        option csv (relative to ROOT, or absolute; .csv or .csv.gz)
    ROOT/<images>/...      option images (relative to ROOT, or absolute; default ROOT)

``path_column`` names each image's file relative to the images folder; a path that is
absolute or climbs out with ``..`` is refused, naming the file and line. The path as
written (without surrounding spaces) is the image's id, so each path may be listed once.
Images are read lazily: a missing or unreadable file (or one a symbolic link takes out of
the folder) is a skipped sample, as in every reader.

The labels take one of two forms:

- **a findings column** (``finding_column`` and ``findings``): each cell lists the
  findings present, separated by ``separator`` (``Effusion|Mass``), and ``findings`` maps
  each finding name (compared without surrounding spaces or case) to an observation or a
  list of observations. An observation the table maps to is labelled on every row:
  positive where a listed finding maps to it, negative where none does. With
  ``hierarchy = true`` (off by default: a parent the CSV does not name is not inferred), a
  positive child also makes its labelled parent positive
  (:data:`~doll_core.data.mapping.PARENTS`).
  Observations the table does not name are unlabelled (``label_mask`` False on every
  image), never inferred: "No Finding" is labelled only if the table maps a finding (e.g.
  ``normal``) to it. Finding names not in the table are counted as unmapped. An empty cell
  is *not labelled*: blank for every observation, like PadChest's empty ``Labels``, which
  the ``blank`` policy makes negative (``zeros``) or leaves out of the loss (``ignore``).
- **label columns** (``label_columns``): one column per observation, each cell in
  CheXpert's codes (1, 0, -1 for uncertain, or blank; ``1.0`` etc. too) or one of the
  user's words given in ``values``. CheXpert's ``uncertainty`` and ``blank`` policies apply.
  Observations without a column are unlabelled.

Patients and splits: ``patient_column`` names each image's patient (without it every
image is its own patient, so images of one patient may land in different splits). With
``split_column`` each row's split is that cell, and a patient whose images are in two
splits is refused. Without it, ``train`` / ``valid`` / ``test`` divide the patients by a
hash of ``split_seed`` and the patient id
(:func:`~doll_plugins.datasets.mapped.patient_split`, 80/10/10 unless ``split_fractions``
says otherwise), so a patient's images stay together, the same on every machine.

In an experiment::

    [data.classification]
    root = "/data/my-hospital"
    dataset = "csv"

    [data.classification.options]
    csv = "labels.csv"
    images = "png"
    patient_column = "patient"
    finding_column = "findings"
    findings = {effusion = "Pleural Effusion", mass = "Lung Lesion", normal = "No Finding"}
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import ascii_letters
from typing import Any, Unpack

import numpy as np

from doll_core.data.chexpert_format import BLANK, NEGATIVE, POSITIVE, UNCERTAIN, parse_label
from doll_core.data.mapping import LabelMapping
from doll_core.data.paths import contained_path
from doll_core.data.samples import LabelOptions, bytes_array, check_choice
from doll_core.errors import DollError
from doll_core.home import expand_home
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from doll_plugins.datasets.mapped import (
    VALID_FRACTION,
    MappedClassification,
    csv_rows,
    patient_split,
)

#: each split's share of the patients when the CSV has no split column
SPLIT_FRACTIONS = {"train": 1 - 2 * VALID_FRACTION, "valid": VALID_FRACTION,
                   "test": VALID_FRACTION}  # fmt: skip
#: what a ``values`` entry may turn a cell into
VALUE_CODES: dict[str, int] = {"1": POSITIVE, "0": NEGATIVE, "-1": UNCERTAIN, "blank": BLANK}
_GIVE = (
    "give either finding_column and findings (one column listing the findings present, "
    "and a table {finding: observation}) or label_columns (a table {column: observation}, "
    "cells 1 / 0 / -1 / blank)"
)


def check_observation(name: object, where: str) -> str:
    """``name`` if it is one of the 14 observations, else a :class:`DollError` naming
    ``where`` it was given, the close matches and the valid names."""
    if isinstance(name, str) and name in OBSERVATIONS:
        return name
    close = difflib.get_close_matches(str(name), OBSERVATIONS, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise DollError(
        f"{where}: {name!r} is not an observation; {hint}the observations are: "
        f"{', '.join(OBSERVATIONS)}"
    )


def path_problem(path: str) -> str | None:
    """Why ``path`` (as a CSV names an image) cannot name a file inside the images folder,
    or ``None``: empty, a NUL, absolute (POSIX or Windows style, a drive or a share) or a
    ``..`` part, by the rules of :func:`~doll_core.data.paths.contained_path` (which checks
    symbolic links when the image is read), in string operations: a CSV has many rows."""
    if not path:
        return "is empty"
    if "\x00" in path:
        return "holds a NUL character"
    if path[0] in "/\\":
        return "is absolute; paths are relative to the images folder"
    if path[1:2] == ":" and path[0] in ascii_letters:
        return "names a drive; paths are relative to the images folder"
    if ".." in path and ".." in path.replace("\\", "/").split("/"):
        return "climbs out of the images folder with '..'"
    return None


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """``split_fractions`` checked: named splits (not ``all``), each share positive, the
    shares summing to 1 (within 1e-6)."""
    if not isinstance(fractions, Mapping) or not fractions:
        raise DollError(f"split_fractions must be a table {{split: share}}, got {fractions!r}")
    checked: dict[str, float] = {}
    for name, share in fractions.items():
        if not isinstance(name, str) or not name.strip() or name == "all":
            raise DollError(f"split_fractions: {name!r} cannot name a split")
        if isinstance(share, bool) or not isinstance(share, int | float) or not share > 0:
            raise DollError(f"split_fractions: the share of {name!r} must be > 0, got {share!r}")
        checked[name] = float(share)
    total = sum(checked.values())
    if abs(total - 1) > 1e-6:
        raise DollError(f"split_fractions must sum to 1, got {total:g} ({checked})")
    return checked


def value_codes(values: Mapping[str, int | str]) -> dict[str, int]:
    """``values`` -> ``{cell text, stripped and lower-cased: CheXpert code}``; each target
    is 1, 0, -1 or ``"blank"``."""
    if not isinstance(values, Mapping):
        raise DollError(
            f"values must be a table {{cell text: 1 | 0 | -1 | 'blank'}}, got {values!r}"
        )
    codes: dict[str, int] = {}
    for word, target in values.items():
        code = None if isinstance(target, bool) else VALUE_CODES.get(str(target).strip().lower())
        if code is None:
            raise DollError(f"values: {word!r} must map to 1, 0, -1 or 'blank', got {target!r}")
        key = str(word).strip().lower()
        if codes.get(key, code) != code:
            raise DollError(f"values: {word!r} is given twice (case and spaces are ignored)")
        codes[key] = code
    return codes


def _row_filter(where: Mapping[str, str | Sequence[str]] | None) -> dict[str, frozenset[str]]:
    """``where`` as ``{column: the values kept}``."""
    if where is None or (isinstance(where, Mapping) and not where):
        return {}  # every row
    if not isinstance(where, Mapping):
        raise DollError(f"where must be a table {{column: value or [values]}}, got {where!r}")
    kept = {}
    for column, wanted in where.items():
        values = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(values, Sequence) or not values:
            raise DollError(f"where[{column!r}] must be a value or a list of values")
        kept[str(column)] = frozenset(str(value).strip() for value in values)
    return kept


def _finding_mapping(findings: Mapping[str, str | Sequence[str]], hierarchy: bool) -> LabelMapping:
    """The user's ``findings`` table as a :class:`LabelMapping`; the observations it does
    not name are unlabelled."""
    if not isinstance(findings, Mapping) or not findings:
        raise DollError(f"findings must be a table {{finding: observation}}, got {findings!r}")
    table: dict[str, tuple[str, ...]] = {}
    keys: dict[str, str] = {}
    for finding, target in findings.items():
        where = f"findings[{finding!r}]"
        targets = [target] if isinstance(target, str) else target
        if not isinstance(targets, Sequence) or not targets:
            raise DollError(f"{where} must name an observation or a list of them, got {target!r}")
        if not str(finding).strip():
            raise DollError(f"{where}: a finding needs a name")
        table[finding] = tuple(check_observation(name, where) for name in targets)
        key = finding.strip().lower()
        if key in keys and table[keys[key]] != table[finding]:
            raise DollError(f"findings {keys[key]!r} and {finding!r} are one name (case and "
                            "spaces are ignored) mapped to different observations")  # fmt: skip
        keys[key] = finding
    mapped = {name for targets in table.values() for name in targets}
    return LabelMapping(
        dataset="csv",
        findings=table,
        unlabelled=tuple(name for name in OBSERVATIONS if name not in mapped),
        hierarchy=hierarchy,
    )


def _column_mapping(label_columns: Mapping[str, str]) -> tuple[LabelMapping, list[tuple[str, int]]]:
    """The user's ``label_columns`` as a :class:`LabelMapping` (which observations are
    labelled) and ``(column, observation index)`` pairs; one column per observation."""
    if not isinstance(label_columns, Mapping) or not label_columns:
        raise DollError(
            f"label_columns must be a table {{column: observation}}, got {label_columns!r}"
        )
    columns: list[tuple[str, int]] = []
    column_of: dict[str, str] = {}
    for column, name in label_columns.items():
        observation = check_observation(name, f"label_columns[{column!r}]")
        if observation in column_of:
            raise DollError(f"label_columns {column_of[observation]!r} and {column!r} both "
                            f"name {observation!r}; give one column per observation")  # fmt: skip
        column_of[observation] = column
        columns.append((column, OBSERVATIONS.index(observation)))
    mapping = LabelMapping(
        dataset="csv",
        findings={name: name for name in column_of},
        unlabelled=tuple(name for name in OBSERVATIONS if name not in column_of),
        hierarchy=False,
    )
    return mapping, columns


def _existing(path: Path, what: str) -> Path:
    """``path`` if it is a file (a folder, when ``what`` names one).

    :raises DollError: naming ``what`` and the path otherwise.
    """
    if not (path.is_dir() if "folder" in what else path.is_file()):
        raise DollError(f"csv: {what} not found: {path}")
    return path


def _label_rules(
    finding_column: str | None,
    findings: Mapping[str, str | Sequence[str]] | None,
    label_columns: Mapping[str, str] | None,
    values: Mapping[str, int | str] | None,
    hierarchy: bool,
    separator: str,
) -> tuple[LabelMapping, list[tuple[str, int]]]:
    """The mapping and the label columns (``[]`` with a findings column) of the options.

    :raises DollError: for no labels, both kinds, or options that do not go together.
    """
    if (finding_column is None) != (findings is None):
        given = "finding_column" if finding_column is not None else "findings"
        raise DollError(f"csv: {given} needs the other of finding_column and findings; {_GIVE}")
    if finding_column is not None and label_columns is not None:
        raise DollError(f"csv: both finding_column and label_columns given; {_GIVE}")
    if findings is not None:
        if not separator:
            raise DollError("csv: separator must not be empty")
        if values is not None:
            raise DollError("csv: values is for label_columns, not finding_column")
        return _finding_mapping(findings, hierarchy), []
    if label_columns is not None:
        return _column_mapping(label_columns)
    raise DollError(f"csv: no labels; {_GIVE}")


class CsvLabels(MappedClassification):
    """A CSV of your own: image paths with a findings column or label columns, mapped to
    the 14 observations by a table you give; splits by patient."""

    def __init__(
        self,
        root: str | Path,
        *,
        csv: str | Path = "labels.csv",
        path_column: str = "path",
        images: str | Path = ".",
        split: str = "all",
        split_column: str | None = None,
        split_fractions: Mapping[str, float] | None = None,
        split_seed: int = 0,
        patient_column: str | None = None,
        finding_column: str | None = None,
        separator: str = "|",
        findings: Mapping[str, str | Sequence[str]] | None = None,
        label_columns: Mapping[str, str] | None = None,
        values: Mapping[str, int | str] | None = None,
        hierarchy: bool = False,
        where: Mapping[str, str | Sequence[str]] | None = None,
        **options: Unpack[LabelOptions],
    ) -> None:
        """:param root: the dataset folder.
        :param csv: the labels CSV, relative to ``root`` or absolute.
        :param path_column: the column of image paths, relative to ``images``.
        :param images: the folder of the images, relative to ``root`` or absolute.
        :param split: ``all``; a value of ``split_column``; or, without it, one of the
            splits of ``split_fractions``.
        :param split_column: the column that gives each row's split (default: none, the
            patients are divided by ``split_fractions``).
        :param split_fractions: each split's share of the patients, summing to 1 (default:
            :data:`SPLIT_FRACTIONS`).
        :param split_seed: which patients go to which split (without ``split_column``).
        :param patient_column: the column of patient ids (default: none, every image is
            its own patient).
        :param finding_column: the column listing the findings present (with ``findings``).
        :param separator: what separates the findings of one cell.
        :param findings: ``{finding name: observation or [observations]}``.
        :param label_columns: ``{column: observation}``, cells 1 / 0 / -1 / blank (instead
            of ``finding_column``).
        :param values: ``{cell text: 1 | 0 | -1 | "blank"}``, the words of label columns
            (compared without case or surrounding spaces, before CheXpert's codes).
        :param hierarchy: with ``findings``, a positive child makes its labelled parent
            positive (default off: what the CSV does not say is not inferred).
        :param where: ``{column: value or [values]}``: read only the rows whose cells hold
            one of the values (stripped), e.g. one source of a pooled CSV; the others are
            not part of the dataset (nor of its patient split). Default (or ``{}``): every
            row.
        :param uncertainty, blank: CheXpert's policies for -1 and blank labels.
        """
        self.mapping, self._columns = _label_rules(
            finding_column, findings, label_columns, values, hierarchy, separator
        )
        self._words = value_codes(values) if values is not None else {}
        self._where = _row_filter(where)
        if split_column is not None and split_fractions is not None:
            raise DollError("csv: give split_column or split_fractions, not both")
        fractions = check_fractions(SPLIT_FRACTIONS if split_fractions is None else split_fractions)
        if split_column is None:
            check_choice("split", split, ("all", *fractions))
        super().__init__(root, **options)
        self.csv_path = _existing(self.root / expand_home(csv, "csv"), "labels CSV")
        self.images = _existing(self.root / expand_home(images, "images"), "images folder")
        self.finding_column, self.separator = finding_column, separator
        self.patient_column, self.split_column = patient_column, split_column
        #: rows whose findings cell is empty (blank for every observation)
        self.empty_findings = 0
        row_splits, split_names, patient_names = self._read(path_column)
        by_patient = f"patients, seed {split_seed}, fractions {fractions}"
        self._splits_by = by_patient if split_column is None else f"column {split_column!r}"
        if split_column is None:
            row_splits, split_names = self._patient_splits(patient_names, fractions, split_seed)
        self._choose_split(split, row_splits, split_names, f"{len(patient_names)} patients")

    def _patient_splits(
        self, patient_names: list[str], fractions: Mapping[str, float], seed: int
    ) -> tuple[np.ndarray, list[str]]:
        """Each row's split (``int32 [N]``, an index into the names) by its patient."""
        patients = [patient_names[number] for number in self._patients]
        names = patient_split(patients, fractions, seed)
        split_names = list(fractions)
        return np.array([split_names.index(n) for n in names], dtype=np.int32), split_names

    def _choose_split(
        self,
        split: str,
        row_splits: np.ndarray,
        split_names: list[str],
        patients: str,
    ) -> None:
        """Count images and patients per split and keep the rows of ``split``.

        :raises DollError: for a split the CSV does not hold, or one left empty.
        """
        split_column = self.split_column
        #: images and patients of every split, over all rows
        self.images_per_split = {name: int((row_splits == k).sum())
                                 for k, name in enumerate(split_names)}  # fmt: skip
        self.patients_per_split = {
            name: len(np.unique(self._patients[row_splits == k]))
            for k, name in enumerate(split_names)
        }
        if split != "all" and split not in split_names:
            raise DollError(
                f"csv: split {split!r} is not in the column {split_column!r} of "
                f"{self.csv_path}; it holds {', '.join(split_names) or 'no rows'} (or use "
                "'all'; an experiment names the splits it reads with [data.classification] "
                "train_split and val_split)"
            )
        if split != "all" and not self.images_per_split[split]:
            raise DollError(
                f"csv: split {split!r} holds no images: dividing {patients} "
                f"({self._splits_by}) gave it none; list more patients, or give "
                "split_fractions or a split_column"
            )
        self.split = split
        if split != "all":
            self._keep(row_splits == split_names.index(split))

    def _read(self, path_column: str) -> tuple[np.ndarray, list[str], list[str]]:
        """Parse every row into :attr:`_ids`, :attr:`_codes` and :attr:`_patients` (the
        patient's number); return each row's split number and the split names (by the
        split column; none without one), and the patients' names by number."""
        path = self.csv_path
        finding_column, patient_column, split_column = (
            self.finding_column, self.patient_column, self.split_column,
        )  # fmt: skip
        columns = [path_column, *([finding_column] if finding_column else []),
                   *(column for column, _ in self._columns),
                   *(c for c in (patient_column, split_column) if c), *self._where]  # fmt: skip
        ids: list[bytes] = []
        codes: list[list[int]] = []
        patients: list[int] = []
        row_splits: list[int] = []
        line_of: dict[str, int] = {}
        patient_of: dict[str, int] = {}
        split_of: dict[str, int] = {}
        #: each patient's first split and line
        first_split: dict[int, tuple[int, int]] = {}
        crossing: list[tuple[str, int, int, int, int]] = []
        for line, row in csv_rows(path, list(dict.fromkeys(columns))):
            if any(row[column].strip() not in kept for column, kept in self._where.items()):
                continue
            image = row[path_column].strip()
            problem = path_problem(image)
            if problem:
                raise DollError(f"{path}, line {line}: the image path {image!r} {problem}")
            first = line_of.setdefault(image, line)
            if first != line:
                raise DollError(f"{path}, lines {first} and {line} both list the image "
                                f"{image!r}; each image may be listed once")  # fmt: skip
            patient = row[patient_column].strip() if patient_column else image
            if not patient:
                raise DollError(f"{path}, line {line}: the {patient_column!r} cell is empty; "
                                "every row needs its patient")  # fmt: skip
            number = patient_of.setdefault(patient, len(patient_of))
            if split_column:
                name = row[split_column].strip()
                if not name:
                    raise DollError(f"{path}, line {line}: the {split_column!r} cell is empty; "
                                    "every row needs its split")  # fmt: skip
                where = split_of.setdefault(name, len(split_of))
                seen, seen_line = first_split.setdefault(number, (where, line))
                if seen != where:
                    crossing.append((patient, seen, seen_line, where, line))
                row_splits.append(where)
            codes.append(self._row_codes(row, line))
            ids.append(image.encode("utf-8"))
            patients.append(number)
        if crossing:
            patient, a, line_a, b, line_b = crossing[0]
            names = list(split_of)
            others = len({c[0] for c in crossing}) - 1
            raise DollError(
                f"{path}: patient {patient!r} is in split {names[a]!r} (line {line_a}) and in "
                f"split {names[b]!r} (line {line_b}); a patient's images must all be in one "
                f"split" + (f" ({others} more patients cross splits)" if others else "")
            )
        self._ids = bytes_array(ids)
        self._codes = np.array(codes, dtype=np.int8).reshape(-1, NUM_OBSERVATIONS)
        self._frontal = np.ones(len(ids), dtype=bool)  # views are not given
        self._patients = np.array(patients, dtype=np.int32)
        return np.array(row_splits, dtype=np.int32), list(split_of), list(patient_of)

    def _row_codes(self, row: Mapping[str, str], line: int) -> list[int]:
        """The 14 CheXpert codes of one row (``BLANK`` where the dataset does not label)."""
        if self.finding_column is not None:
            named = dict.fromkeys(f.strip() for f in row[self.finding_column].split(self.separator))
            named.pop("", None)
            if not named:
                self.empty_findings += 1
                return [BLANK] * NUM_OBSERVATIONS
            self.findings.update(list(named))
            return self.mapping.codes(named, self.unmapped)
        codes = [BLANK] * NUM_OBSERVATIONS
        for column, index in self._columns:
            cell = row[column]
            code = self._words.get(cell.strip().lower()) if self._words else None
            if code is None:
                try:
                    code = parse_label(cell)
                except ValueError:
                    words = f", or one of values {list(self._words)}" if self._words else ""
                    raise DollError(
                        f"{self.csv_path}, line {line}, column {column!r}: {cell!r} is not a "
                        f"label; a cell is 1, 0, -1 or blank{words}"
                    ) from None
            codes[index] = code
        return codes

    def _keep(self, keep: np.ndarray) -> None:
        super()._keep(keep)
        self._patients = self._patients[keep]

    def image_path(self, index: int) -> Path:
        return contained_path(self.images, self.sample_id(index))

    def summary(self) -> dict[str, Any]:
        """Images, label counts per observation, what is unlabelled and unmapped, and the
        patients and images of every split (over all rows, whichever split is read)."""
        counts = super().summary()
        for key in ("frontal", "lateral"):  # the CSV does not say
            counts.pop(key)
        patients: int | str = (
            len(np.unique(self._patients)) if self.patient_column else "not given (one per image)"
        )
        result = {
            "split": self.split,
            "csv": str(self.csv_path),
            "images_folder": str(self.images),
            **counts,
            "labels": (
                f"findings column {self.finding_column!r}"
                if self.finding_column is not None
                else f"label columns {[column for column, _ in self._columns]}"
            ),
            "patients": patients,
            "splits_by": self._splits_by,
            "rows_kept": (
                {column: sorted(values) for column, values in self._where.items()} or "all"
            ),
            "patients_per_split": self.patients_per_split,
            "images_per_split": self.images_per_split,
        }
        if self.finding_column is not None:
            result["empty_findings"] = self.empty_findings
            result["findings"] = dict(self.findings.most_common())
        return result
