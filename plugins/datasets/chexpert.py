"""CheXpert reader: ``train.csv`` / ``valid.csv`` with CheXpert's exact columns.

The CSV is parsed once, streaming, into compact numpy arrays (paths as bytes, label
codes as int8): no per-row Python objects, so a 223k-row CSV costs about 20 MB and
DataLoader workers share it without copy-on-write growth. Images are read lazily.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from doll_core.data.chexpert_format import (
    BLANK,
    CHEXPERT_HEADER,
    CHEXPERT_PREFIXES,
    CODE_NAMES,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    parse_label,
)
from doll_core.data.paths import contained_path
from doll_core.data.samples import LabelledImages, ReaderOptions, bytes_array, check_choice
from doll_core.errors import DollError
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS

SPLITS = ("train", "valid")
UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")
BLANK_POLICIES = ("zeros", "ignore")
_CODES = (POSITIVE, NEGATIVE, UNCERTAIN, BLANK)
#: column in ``_CODES`` order of a code, indexed by ``code - BLANK``
_COLUMN_OF_CODE = np.array([_CODES.index(code) for code in range(BLANK, POSITIVE + 1)])
_PATIENT = re.compile(r"patient(\d+)")
#: A byte that was not UTF-8, as ``errors="surrogateescape"`` decodes it.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def find_csv(root: Path, split: str) -> Path:
    """``root/<split>.csv`` or ``root/<prefix>/<split>.csv`` for a CheXpert prefix folder."""
    candidates = [root / f"{split}.csv"] + [root / p / f"{split}.csv" for p in CHEXPERT_PREFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DollError(f"CheXpert {split} CSV not found; looked for {tried}")


def _policy_table(
    uncertainty: str | Mapping[str, str], blank: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per observation and code (order of ``_CODES``): label value ``[14, 4]`` and whether
    it counts ``[14, 4]``."""
    if isinstance(uncertainty, str):
        per_observation = {name: uncertainty for name in OBSERVATIONS}
    elif isinstance(uncertainty, Mapping):
        unknown = sorted(set(uncertainty) - set(OBSERVATIONS) - {"default"})
        if unknown:
            raise DollError(
                f"uncertainty policy names unknown observations {unknown}; "
                f"observations are: {', '.join(OBSERVATIONS)}"
            )
        default = uncertainty.get("default", "ones")
        per_observation = {name: uncertainty.get(name, default) for name in OBSERVATIONS}
    else:
        raise DollError(f"uncertainty must be a policy name or a mapping, got {uncertainty!r}")
    blank = check_choice("blank policy", blank, BLANK_POLICIES)
    values = np.zeros((NUM_OBSERVATIONS, len(_CODES)), dtype=np.float32)
    counts = np.ones((NUM_OBSERVATIONS, len(_CODES)), dtype=bool)
    for k, name in enumerate(OBSERVATIONS):
        policy = check_choice(
            f"uncertainty policy of {name!r}", per_observation[name], UNCERTAINTY_POLICIES
        )
        values[k, 0] = 1.0  # positive
        values[k, 2] = 1.0 if policy == "ones" else 0.0
        counts[k, 2] = policy != "ignore"
        counts[k, 3] = blank != "ignore"
    return values, counts


def _parse_labels(cells: Sequence[str], where: str) -> list[int]:
    """The 14 label codes of a row; a :class:`DollError` naming the column of a bad cell."""
    codes = []
    for name, cell in zip(OBSERVATIONS, cells, strict=True):
        try:
            codes.append(parse_label(cell))
        except ValueError as exc:
            raise DollError(f"{where}: {exc} (column {name!r})") from None
    return codes


def _check_utf8(row: Sequence[str], where: str) -> None:
    """A :class:`DollError` naming the column of the first byte that was not UTF-8 (read
    with ``errors="surrogateescape"``, such a byte is a lone surrogate)."""
    if not _NOT_UTF8.search("".join(row)):
        return
    for k, cell in enumerate(row):
        if found := _NOT_UTF8.search(cell):
            column = repr(CHEXPERT_HEADER[k]) if k < len(CHEXPERT_HEADER) else str(k + 1)
            raise DollError(
                f"{where}: not UTF-8 text (byte 0x{ord(found.group()) - 0xDC00:02x} in "
                f"column {column}); save the CSV as UTF-8"
            )


class CheXpert(LabelledImages):
    """CheXpert (train.csv / valid.csv, 14 observations, U-Ones/U-Zeros/U-Ignore)."""

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        uncertainty: str | Mapping[str, str] = "ones",
        blank: str = "zeros",
        frontal_only: bool = False,
        csv_path: str | Path | None = None,
        **options: Unpack[ReaderOptions],
    ) -> None:
        """:param root: the folder that holds ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``),
            or that folder itself.
        :param split: ``train`` or ``valid``.
        :param uncertainty: what -1 becomes: ``ones``, ``zeros`` or ``ignore`` (left out of
            the loss); or a mapping from observation name (and ``default``) to a policy.
        :param blank: what a blank cell becomes: ``zeros`` or ``ignore``.
        :param frontal_only: keep only rows whose ``Frontal/Lateral`` is ``Frontal``.
        :param csv_path: read this CSV instead of ``<split>.csv`` (same columns).
        :param options: the shared reader options
            (:class:`~doll_core.data.samples.ReaderOptions`: size, grayscale, on_error,
            max_image_pixels).
        """
        super().__init__(root, **options)
        self.split = check_choice("split", split, SPLITS)
        self.csv_path = Path(csv_path) if csv_path is not None else find_csv(self.root, split)
        if not self.csv_path.is_file():
            raise DollError(f"CheXpert CSV not found: {self.csv_path}")
        self._values, self._counts = _policy_table(uncertainty, blank)
        paths, codes, frontal = self._parse(self.csv_path)
        keep = frontal if frontal_only else np.ones(len(paths), dtype=bool)
        self._paths = paths[keep]
        self._codes = codes[keep]
        self._frontal = frontal[keep]
        self._image_base = self.csv_path.parent

    @staticmethod
    def _parse(csv_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paths, label codes and frontal flags of every row; a :class:`DollError` that
        names the file, line and column of anything that is not CheXpert's format."""
        paths: list[bytes] = []
        codes: list[list[int]] = []
        frontal: list[bool] = []
        line = 1
        # utf-8-sig: a byte-order mark (as Excel writes) is not part of the first column;
        # surrogateescape: a byte that is not UTF-8 is found, and named, row by row
        with csv_path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            reader = csv.reader(handle)
            try:
                raw_header = next(reader, [])
                _check_utf8(raw_header, f"{csv_path}, line 1")
                header = tuple(cell.strip() for cell in raw_header)
                if header != CHEXPERT_HEADER:
                    missing = [c for c in CHEXPERT_HEADER if c not in header]
                    extra = [c for c in header if c not in CHEXPERT_HEADER]
                    raise DollError(
                        f"{csv_path} does not have CheXpert's columns"
                        + (f"; missing {missing}" if missing else "")
                        + (f"; unexpected {extra}" if extra else "")
                        + ("; same columns in another order" if not missing and not extra else "")
                    )
                line = reader.line_num + 1
                for row in reader:
                    where, line = f"{csv_path}, line {line}", reader.line_num + 1
                    if not row:
                        continue
                    _check_utf8(row, where)
                    if len(row) != len(CHEXPERT_HEADER):
                        raise DollError(
                            f"{where}: {len(row)} cells, expected {len(CHEXPERT_HEADER)}"
                        )
                    codes.append(_parse_labels(row[5:], where))
                    if "\x00" in row[0]:
                        raise DollError(f"{where}: the path holds a NUL character (column 'Path')")
                    paths.append(row[0].encode("utf-8"))
                    frontal.append(row[3].strip() == "Frontal")
            except csv.Error as exc:
                raise DollError(
                    f"{csv_path}, line {line}: not a readable CSV row ({exc})"
                ) from None
        return (
            bytes_array(paths),
            np.array(codes, dtype=np.int8).reshape(-1, NUM_OBSERVATIONS),
            np.array(frontal, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self._paths)

    def sample_id(self, index: int) -> str:
        return bytes(self._paths[index]).decode("utf-8")

    def image_path(self, index: int) -> Path:
        """The file of sample ``index``: its CSV ``Path`` without the release prefix,
        under the folder that holds the CSV. A ``Path`` that leads outside that folder is
        refused (:class:`ImageReadError`, so the row is skipped or stops the run)."""
        relative = Path(self.sample_id(index))
        if relative.parts and relative.parts[0] in CHEXPERT_PREFIXES:
            relative = Path(*relative.parts[1:])
        return contained_path(self._image_base, relative)

    def label_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``float32 [14]`` and label mask ``bool [14]`` of sample ``index``."""
        column = _COLUMN_OF_CODE[self._codes[index].astype(np.int64) - BLANK]
        rows = np.arange(NUM_OBSERVATIONS)
        return self._values[rows, column], self._counts[rows, column]

    def summary(self) -> dict[str, Any]:
        """Rows, views, patients and per-observation counts of each label value."""
        patients = {
            m.group(1)
            for p in self._paths
            if (m := _PATIENT.search(bytes(p).decode("utf-8", "replace")))
        }
        return {
            "split": self.split,
            "csv": str(self.csv_path),
            "images": len(self),
            "frontal": int(self._frontal.sum()),
            "lateral": int((~self._frontal).sum()),
            "patients": len(patients),
            "observations": {
                name: {CODE_NAMES[c]: int((self._codes[:, k] == c).sum()) for c in _CODES}
                for k, name in enumerate(OBSERVATIONS)
            },
        }
