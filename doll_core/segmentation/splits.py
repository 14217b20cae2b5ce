"""How a downstream segmentation task is divided into training, validation and test images.

Four ways (``splits`` in a task's ``[data.tasks.NAME]``, :class:`SplitSpec`):

- ``random``: a seeded draw by image (``test_fraction`` of the images to test, then
  ``val_fraction`` of the rest to validation). Several images of one patient may land on
  both sides; use it only where each patient has one image.
- ``patients``: the same fractions, drawn by patient: patients are shuffled (seeded) and
  given to test, then validation, until each holds its share of the images; the rest
  train. The patient of an image comes from a CSV (``patient_file``: a column of image
  stems and a column of patients) or from a regular expression over the image's id
  (``patient_pattern``: its first group, or the whole match).
- ``file``: a split file, as nnU-Net's ``splits_final.json`` or a MONAI datalist name each
  case's fold: a CSV with a column of image ids (``image``, ``stem``, ``id`` or ``case``)
  and a ``split`` column (``train``/``training``, ``valid``/``val``/``validation``,
  ``test``/``testing``, any case), optionally a ``patient`` column. Images the file does
  not list are left out (and counted); an id the file lists that the dataset lacks is an
  error. A ``.json`` split file is a MONAI datalist (``training``, ``validation`` and
  ``test`` lists of ``{"image": PATH}`` entries or paths); nnU-Net's ``splits_final.json``
  names no test cases and is refused with that reason.
- ``folders``: the dataset's own split folders (COVID-QU-Ex's ``Train``/``Val``/``Test``).

Wherever patients are known (``patients``, a split file with a ``patient`` column, or a
``patient_file``/``patient_pattern`` given with another way), a patient whose images are in
two splits is an error naming the patient. :class:`TaskSplit` is the split actually used:
the ids of each split, the patients of each, and a digest that enters the fine-tuning
stages' keys, so that an edited split file never reuses runs made on the old one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import Subset

from doll_core.data.decoded import attach_image_cache
from doll_core.errors import DollError
from doll_core.interfaces import optional_member
from doll_core.text_files import first_line_not_utf8

if TYPE_CHECKING:
    from doll_core.registry import Registry
    from doll_core.segmentation.config import FinetuneConfig

SplitMode = Literal["random", "patients", "file", "folders"]
SPLIT_MODES: tuple[str, ...] = ("random", "patients", "file", "folders")
#: the three splits, in the order :class:`TaskSplit` lists them
SPLIT_NAMES = ("train", "valid", "test")
#: how a split file may spell each split (compared in lower case)
SPLIT_SPELLINGS = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}
#: the columns a split or patient file may name its image ids by (the first found is read)
ID_COLUMNS = ("image", "stem", "id", "case")
#: the seed of every draw of test and validation images, the same for every run
SPLIT_SEED = 0


@dataclass(frozen=True)
class SplitSpec:
    """How to split one task (the fine-tuning inputs ``splits``, ``split_file``,
    ``patient_file``, ``patient_column``, ``patient_pattern``, ``val_fraction`` and
    ``test_fraction``)."""

    mode: str = "random"
    split_file: Path | None = None
    patient_file: Path | None = None
    patient_column: str = "patient"
    patient_pattern: str | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2

    def problems(self, *, check_files: bool = True) -> list[str]:
        """What makes this spec unusable, before any file is read; ``check_files``: say
        also which named file does not exist (off for a caller that reports those under
        their own keys)."""
        found = []
        if self.mode not in SPLIT_MODES:
            found.append(f"splits must be one of {', '.join(SPLIT_MODES)}; got {self.mode!r}")
        if self.mode == "file" and self.split_file is None:
            found.append("splits = 'file' needs split_file = PATH (a CSV of image and split)")
        if self.mode != "file" and self.split_file is not None:
            found.append(f"split_file is read only with splits = 'file' (splits is {self.mode!r})")
        if self.mode == "patients" and self.patient_file is None and not self.patient_pattern:
            found.append(
                "splits = 'patients' needs patient_file = PATH (a CSV of image and patient) "
                "or patient_pattern = REGEX (over the image id)"
            )
        if self.patient_file is not None and self.patient_pattern:
            found.append("give patient_file or patient_pattern, not both")
        if self.patient_pattern:
            try:
                re.compile(self.patient_pattern)
            except re.error as exc:
                found.append(f"patient_pattern {self.patient_pattern!r} is no regex: {exc}")
        for option in ("split_file", "patient_file") if check_files else ():
            path = getattr(self, option)
            if path is not None and not Path(path).is_file():
                found.append(f"{option}: file not found: {path}")
        return found


@dataclass(frozen=True)
class TaskSplit:
    """The split used: for each of ``train``, ``valid``, ``test`` the dataset indices and
    ids (with ``folders``, indices into that split's own dataset), the patients of each
    split where known, and how it was made."""

    how: str
    indices: dict[str, list[int]]
    ids: dict[str, list[str]]
    patients: dict[str, list[str]] | None = None
    left_out: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {name: len(self.ids[name]) for name in SPLIT_NAMES}

    def digest(self) -> str:
        """16 hex digits over the ids of each split."""
        text = json.dumps({name: sorted(self.ids[name]) for name in SPLIT_NAMES})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """What ``doll report`` shows: how, images and patients per split, images left out."""
        return {
            "how": self.how,
            "images": self.sizes(),
            "patients": (
                {name: len(set(self.patients[name])) for name in SPLIT_NAMES}
                if self.patients is not None
                else None
            ),
            "left_out": len(self.left_out),
            "digest": self.digest(),
        }

    def record(self) -> dict[str, Any]:
        """:meth:`summary` with every split's ids (and patients): ``split.json``."""
        return {**self.summary(), "ids": self.ids, "patient_of_split": self.patients}


def seeded_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(count)`` into (rest, held-out ``fraction``, at least one)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(count * fraction))
    return sorted(order[held:]), sorted(order[:held])


def _sample_ids(dataset: Any) -> list[str]:
    sample_id: Callable[[int], str] | None = optional_member(dataset, "dataset", "sample_id")
    if sample_id is None:
        raise DollError(
            f"dataset {type(dataset).__name__} has no sample_id(index): a split by file or "
            "by patient needs each image's id"
        )
    return [str(sample_id(i)) for i in range(len(dataset))]


def _ids_or_indices(dataset: Any) -> list[str]:
    """Each image's id where the reader gives them (``sample_id``), else its index: all a
    split that needs no ids goes by."""
    sample_id: Callable[[int], str] | None = optional_member(dataset, "dataset", "sample_id")
    if sample_id is None:
        return [str(i) for i in range(len(dataset))]
    return [str(sample_id(i)) for i in range(len(dataset))]


def _read_csv(path: Path, what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line, row)`` pairs of a CSV file, as one clear error if not."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            rows = []
            for row in reader:
                cells = {str(k).strip(): (v or "").strip() for k, v in row.items() if k}
                rows.append((reader.line_num, cells))
    except UnicodeDecodeError as exc:
        line = first_line_not_utf8(path)
        raise DollError(f"{what} {path}, line {line}: not UTF-8 text ({exc.reason})") from None
    except (csv.Error, OSError) as exc:
        raise DollError(f"{what} {path}: not a readable CSV ({exc})") from None
    return header, rows


def _id_column(header: Sequence[str], path: Path, what: str) -> str:
    for name in ID_COLUMNS:
        if name in header:
            return name
    raise DollError(
        f"{what} {path} has no image column (one of {', '.join(ID_COLUMNS)}); it has {list(header)}"
    )


def _image_key(value: str) -> str:
    """An id as a split file may write it: a stem, or a file name (its extension dropped)."""
    name = value.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and suffix.lower() in _IMAGE_SUFFIXES else name


_IMAGE_SUFFIXES = {"png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif", "dcm", "dicom", "img"}


def _lookup(ids: Sequence[str]) -> dict[str, int]:
    """Image key -> index; an id is found by itself or by its stem."""
    table: dict[str, int] = {}
    for index, sample_id in enumerate(ids):
        table.setdefault(sample_id, index)
        table.setdefault(_image_key(sample_id), index)
    return table


def patients_of(spec: SplitSpec, ids: Sequence[str], where: str) -> list[str] | None:
    """Each image's patient (``None`` when the spec names no source of patients).

    :raises DollError: an image the patient file does not list, or whose id the pattern
        does not match, named with the file or pattern.
    """
    if spec.patient_pattern:
        pattern = re.compile(spec.patient_pattern)
        found = []
        for sample_id in ids:
            match = pattern.search(sample_id)
            if match is None:
                raise DollError(
                    f"{where}: patient_pattern {spec.patient_pattern!r} does not match the "
                    f"image id {sample_id!r}"
                )
            found.append(match.group(1) if pattern.groups else match.group(0))
        return found
    if spec.patient_file is None:
        return None
    path = Path(spec.patient_file)
    header, rows = _read_csv(path, "patient_file")
    column = _id_column(header, path, "patient_file")
    if spec.patient_column not in header:
        raise DollError(
            f"patient_file {path} has no column {spec.patient_column!r} (patient_column); "
            f"it has {header}"
        )
    table: dict[str, str] = {}
    for _, row in rows:
        if row.get(column):
            table[_image_key(row[column])] = row[spec.patient_column]
    missing = [i for i in ids if i not in table and _image_key(i) not in table]
    if missing:
        raise DollError(
            f"{where}: patient_file {path} does not list {len(missing)} image(s), e.g. "
            f"{missing[:3]}"
        )
    return [table.get(i, table.get(_image_key(i), "")) for i in ids]


def _check_patients(split: TaskSplit, where: str) -> None:
    if split.patients is None:
        return
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for patient in split.patients[name]:
            other = seen.setdefault(patient, name)
            if other != name:
                raise DollError(
                    f"{where}: patient {patient!r} has images in both {other} and {name} "
                    f"({split.how}); a patient must stay in one split"
                )


def _split_from_indices(
    how: str,
    ids: Sequence[str],
    parts: dict[str, list[int]],
    patients: Sequence[str] | None,
    left_out: list[str] | None = None,
) -> TaskSplit:
    return TaskSplit(
        how=how,
        indices={name: list(parts[name]) for name in SPLIT_NAMES},
        ids={name: [ids[i] for i in parts[name]] for name in SPLIT_NAMES},
        patients=(
            {name: [patients[i] for i in parts[name]] for name in SPLIT_NAMES}
            if patients is not None
            else None
        ),
        left_out=left_out or [],
    )


def _random_parts(count: int, spec: SplitSpec) -> dict[str, list[int]]:
    rest, test = seeded_split(count, spec.test_fraction, SPLIT_SEED)
    order, held = seeded_split(len(rest), spec.val_fraction, SPLIT_SEED + 1)
    return {"train": [rest[i] for i in order], "valid": [rest[i] for i in held], "test": test}


def _patient_parts(patients: Sequence[str], spec: SplitSpec) -> dict[str, list[int]]:
    """Patients shuffled (seeded, from their sorted names), given to test until it holds
    ``test_fraction`` of the images, then to validation until it holds ``val_fraction``
    of the rest; at least one patient each while two remain for training."""
    by_patient: dict[str, list[int]] = {}
    for index, patient in enumerate(patients):
        by_patient.setdefault(patient, []).append(index)
    names = sorted(by_patient)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(SPLIT_SEED))
    queue = [names[i] for i in order.tolist()]
    total = len(patients)
    goals = {"test": spec.test_fraction * total}
    goals["valid"] = spec.val_fraction * (total - goals["test"])
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for name in ("test", "valid"):
        while queue and len(queue) > 1 and (not parts[name] or len(parts[name]) < goals[name]):
            parts[name] += by_patient[queue.pop(0)]
    for patient in queue:
        parts["train"] += by_patient[patient]
    return {name: sorted(indices) for name, indices in parts.items()}


#: a MONAI datalist's keys (``load_decathlon_datalist``) -> DoLL's splits
DATALIST_KEYS = {"training": "train", "validation": "valid", "test": "test"}


def _datalist_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A MONAI datalist (``{"training": [{"image": PATH, ...}], "validation": [...],
    "test": [...]}``, test entries dicts or paths) as split-file rows ``image, split``,
    numbered by entry; a list (nnU-Net's ``splits_final.json``) is refused, since it names
    no test cases."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DollError(f"split_file {path}: not a readable JSON file ({exc})") from None
    if isinstance(document, list):
        raise DollError(
            f"split_file {path} is a list of folds (nnU-Net's splits_final.json): it names "
            "training and validation cases but no test cases; give a CSV of image and split "
            "(train, valid, test) or a MONAI datalist with a 'test' list"
        )
    if not isinstance(document, dict) or not set(DATALIST_KEYS) & set(document):
        raise DollError(
            f"split_file {path}: a JSON split file is a MONAI datalist with the lists "
            f"{', '.join(DATALIST_KEYS)}"
        )
    rows: list[tuple[int, dict[str, str]]] = []
    for key, split in DATALIST_KEYS.items():
        entries = document.get(key, [])
        if not isinstance(entries, list):
            raise DollError(f"split_file {path}: {key!r} must be a list")
        for entry in entries:
            image = entry.get("image") if isinstance(entry, dict) else entry
            if not isinstance(image, str) or not image:
                raise DollError(f"split_file {path}, {key!r} entry {len(rows) + 1}: no image path")
            rows.append((len(rows) + 1, {"image": image, "split": split}))
    return ["image", "split"], rows


def _file_parts(
    spec: SplitSpec, ids: Sequence[str], where: str
) -> tuple[dict[str, list[int]], list[str] | None, list[str]]:
    assert spec.split_file is not None
    path = Path(spec.split_file)
    if path.suffix.lower() == ".json":
        header, rows = _datalist_rows(path)
    else:
        header, rows = _read_csv(path, "split_file")
    column = _id_column(header, path, "split_file")
    if "split" not in header:
        raise DollError(f"split_file {path} has no 'split' column; it has {header}")
    lookup = _lookup(ids)
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    listed: dict[int, int] = {}
    patient_of: dict[int, str] = {}
    for line, row in rows:
        value = row.get(column, "")
        if not value:
            continue
        split = SPLIT_SPELLINGS.get(row.get("split", "").lower())
        if split is None:
            raise DollError(
                f"split_file {path}, line {line}: split {row.get('split')!r} is none of "
                f"{', '.join(sorted(SPLIT_SPELLINGS))}"
            )
        index = lookup.get(value, lookup.get(_image_key(value)))
        if index is None:
            raise DollError(f"split_file {path}, line {line}: no image {value!r} in the dataset")
        if index in listed:
            raise DollError(
                f"split_file {path}, line {line}: image {value!r} is listed again "
                f"(first on line {listed[index]})"
            )
        listed[index] = line
        parts[split].append(index)
        if "patient" in header:
            patient_of[index] = row.get("patient", "")
    patients: list[str] | None = None
    if "patient" in header:
        patients = [patient_of.get(i, "") for i in range(len(ids))]
    left_out = [ids[i] for i in range(len(ids)) if i not in listed]
    return {name: sorted(v) for name, v in parts.items()}, patients, left_out


def split_dataset(dataset: Any, spec: SplitSpec, where: str = "task") -> TaskSplit:
    """The split of one dataset (modes ``random``, ``patients``, ``file``).

    :param where: the task, for messages.
    :raises DollError: an unusable spec or file, or a patient in two splits.
    """
    problems = spec.problems()
    if problems:
        raise DollError(f"{where}: {problems[0]}")
    if spec.mode == "random":
        ids = _ids_or_indices(dataset)
        parts = _random_parts(len(dataset), spec)
        patients = patients_of(spec, ids, where)
        split = _split_from_indices("random by image", ids, parts, patients)
    elif spec.mode == "patients":
        ids = _sample_ids(dataset)
        patients = patients_of(spec, ids, where)
        assert patients is not None
        source = spec.patient_file or f"pattern {spec.patient_pattern!r}"
        split = _split_from_indices(
            f"random by patient ({source})", ids, _patient_parts(patients, spec), patients
        )
    elif spec.mode == "file":
        ids = _sample_ids(dataset)
        parts, patients, left_out = _file_parts(spec, ids, where)
        if patients is None:
            patients = patients_of(spec, ids, where)
        split = _split_from_indices(f"split file {spec.split_file}", ids, parts, patients, left_out)
    else:
        raise DollError(f"{where}: splits = {spec.mode!r} splits three datasets, not one")
    _check_patients(split, where)
    return split


def split_folders(datasets: Sequence[Any], spec: SplitSpec, where: str = "task") -> TaskSplit:
    """The split of ``splits = 'folders'``: the train, validation and test datasets as the
    dataset's folders make them (patients checked where a patient source is given)."""
    ids = {name: _ids_or_indices(ds) for name, ds in zip(SPLIT_NAMES, datasets, strict=True)}
    patients = None
    if spec.patient_file is not None or spec.patient_pattern:
        patients = {name: patients_of(spec, ids[name], where) or [] for name in SPLIT_NAMES}
    split = TaskSplit(
        how="the dataset's split folders",
        indices={name: list(range(len(ids[name]))) for name in SPLIT_NAMES},
        ids=ids,
        patients=patients,
    )
    _check_patients(split, where)
    return split


def task_datasets(
    config: FinetuneConfig, registry: Registry
) -> tuple[tuple[Any, Any, Any], TaskSplit]:
    """A task's training pool, validation and test sets, as ``config``'s split makes them
    (:mod:`doll_core.segmentation.splits`), and that split.

    :raises DollError: an unusable split (a patient in two splits, an unknown image in a
        split file, ...), naming the task's folder.
    """
    options = {
        "size": config.image_size,
        "grayscale": config.in_channels == 1,
        "on_error": config.on_error,
        **config.dataset_options,
    }
    create = registry.create
    spec, where = config.split_spec(), f"task {config.data}"
    if config.splits == "folders":
        parts = tuple(
            create("dataset", config.dataset, root=config.data, split=s, **options)
            for s in (config.train_split, config.val_split, config.test_split)
        )
        for part in parts:
            attach_image_cache(part, config.image_cache)
        return (parts[0], parts[1], parts[2]), split_folders(parts, spec, where)
    full = create("dataset", config.dataset, root=config.data, **options)
    attach_image_cache(full, config.image_cache)
    split = split_dataset(full, spec, where)
    train, valid, test = (Subset(full, split.indices[name]) for name in SPLIT_NAMES)
    return (train, valid, test), split
