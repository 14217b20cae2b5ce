"""What the readers of datasets mapped to CheXpert's observations share (NIH ChestX-ray14,
PadChest): image ids and files as compact numpy arrays, labels as CheXpert codes
``int8 [N, 14]`` turned into labels by CheXpert's policies, a label mask that leaves out
what the dataset does not label, and the counts ``doll data inspect`` prints."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Unpack

import numpy as np

from doll_core.data.chexpert_format import (
    BLANK,
    CODE_NAMES,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
)
from doll_core.data.mapping import UNSTATED, LabelMapping
from doll_core.data.samples import LabelledImages, ReaderOptions, bytes_array
from doll_core.errors import DollError
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from doll_core.text_files import first_line_not_utf8
from doll_plugins.datasets.chexpert import _policy_table

_CODES = (POSITIVE, NEGATIVE, UNCERTAIN, BLANK, UNSTATED)
#: column in ``_CODES`` order of a code, indexed by ``code - UNSTATED``
_COLUMN_OF_CODE = np.array([_CODES.index(code) for code in range(UNSTATED, POSITIVE + 1)])
_CODE_NAMES = {**CODE_NAMES, UNSTATED: "unstated"}


def open_text(path: Path) -> IO[str]:
    """A CSV file (``.csv`` or ``.csv.gz``) as UTF-8 text, a byte-order mark dropped."""
    raw = path.open("rb")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8-sig", newline="")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: cell})`` for every row of ``path`` with the ``required`` columns
    (by the header's names; cells past the named columns, as NIH's irregular header
    leaves, are ignored).

    :raises DollError: naming the file (and line) of a missing column, a row too short,
        bytes that are not UTF-8 or text that is not CSV.
    """
    line = 1  # the physical line the reader has read up to
    try:
        with open_text(path) as handle:
            reader = csv.reader(handle)
            header = [cell.strip() for cell in next(reader, [])]
            missing = [name for name in required if name not in header]
            if missing:
                raise DollError(f"{path} lacks the column(s) {missing}; it has {header}")
            positions = {name: header.index(name) for name in required}
            last = max(positions.values())
            for row in reader:
                first, line = line + 1, reader.line_num
                if not row:
                    continue
                if len(row) <= last:
                    raise DollError(f"{path}, line {first}: {len(row)} cells, expected at least "
                                    f"{last + 1}")  # fmt: skip
                cells = {name: row[k] for name, k in positions.items()}
                spread = [name for name, cell in cells.items() if "\n" in cell or "\r" in cell]
                if spread:
                    raise DollError(
                        f"{path}, line {first}: the {spread[0]!r} cell runs over lines "
                        f"{first}-{line}: a quote opened there is not closed on its line"
                    )
                yield first, cells
    except UnicodeDecodeError as exc:
        bad = first_line_not_utf8(path)
        raise DollError(f"{path}, line {bad or line}: not UTF-8 text ({exc.reason})") from None
    except (csv.Error, OSError, EOFError) as exc:  # gzip errors are OSError / EOFError
        raise DollError(f"{path}, line {line}: not a readable CSV ({exc})") from None


def read_text_file(path: Path) -> str:
    """A whole UTF-8 text file (a list of image names, say).

    :raises DollError: naming the file and the first line that is not UTF-8.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DollError(
            f"{path}, line {first_line_not_utf8(path)}: not UTF-8 text ({exc.reason})"
        ) from None
    except OSError as exc:
        raise DollError(f"cannot read {path}: {exc.strerror or exc}") from None


#: The largest identifier the readers keep as a number (int64, the arrays they use).
MAX_IDENTIFIER = 2**63 - 1


def numeric_identifier(value: str, path: Path, line: int, column: str) -> int:
    """A patient or study number of a CSV cell (digits, at most :data:`MAX_IDENTIFIER`).

    :raises DollError: naming the file, line, column and value otherwise: an identifier
        that is not a number would otherwise merge patients or overflow.
    """
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_IDENTIFIER:
        raise DollError(
            f"{path}, line {line}: {column} must be a whole number up to {MAX_IDENTIFIER}, "
            f"got {value!r}"
        )
    return int(text)


#: the share of patients :func:`patient_split` puts in ``valid`` (and, where a dataset has
#: no test split of its own, in ``test``)
VALID_FRACTION = 0.1


def patient_split(patients: Sequence[str], fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Each patient's split, ``str [N]``: a patient goes to the split whose share of
    ``[0, 1)`` holds the SHA-256 of ``"seed:patient"`` (read as a fraction), in the order
    of ``fractions`` (the last split takes the rest). Every image of a patient lands in
    the same split, whatever the file order, on every machine."""
    names = list(fractions)
    bounds = np.cumsum([fractions[name] for name in names[:-1]])
    cache: dict[str, str] = {}
    result = []
    for patient in patients:
        if patient not in cache:
            digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
            where = int.from_bytes(digest[:8], "big") / 2**64
            cache[patient] = names[int(np.searchsorted(bounds, where, side="right"))]
        result.append(cache[patient])
    return np.array(result, dtype=object)


class MappedClassification(LabelledImages):
    """A classification dataset whose findings :attr:`mapping` maps to the 14
    observations. Subclasses fill :attr:`_ids` (``bytes [N]``), :attr:`_codes` (``int8
    [N, 14]``) and :attr:`_frontal` (``bool [N]``), and implement :meth:`image_path`."""

    #: the dataset's findings -> observations (set by each subclass)
    mapping: LabelMapping

    @classmethod
    def label_rules(cls, **options: Any) -> str | None:
        """The digest of the label rules (:meth:`LabelMapping.digest`): it enters the
        classifier stage's key, so a classifier taught under other rules is not reused.
        ``None`` where the rules come from the options (the ``csv`` reader's table)."""
        mapping = getattr(cls, "mapping", None)
        return mapping.digest() if isinstance(mapping, LabelMapping) else None

    def __init__(
        self,
        root: str | Path,
        *,
        uncertainty: str | Mapping[str, str] = "ones",
        blank: str = "zeros",
        **options: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(root, **options)
        values, counts = _policy_table(uncertainty, blank)
        # UNSTATED: value 0, never counted, whatever the policies
        self._values = np.concatenate([values, np.zeros((NUM_OBSERVATIONS, 1), values.dtype)], 1)
        self._counts = np.concatenate([counts, np.zeros((NUM_OBSERVATIONS, 1), bool)], 1)
        self._labelled = self.mapping.labelled
        self._ids = bytes_array([])
        self._codes = np.zeros((0, NUM_OBSERVATIONS), dtype=np.int8)
        self._frontal = np.zeros(0, dtype=bool)
        #: finding names that mapped to nothing, with how many images listed them
        self.unmapped: Counter[str] = Counter()
        #: every finding name with how many images listed it
        self.findings: Counter[str] = Counter()

    def _keep(self, keep: np.ndarray) -> None:
        self._ids, self._codes, self._frontal = (
            self._ids[keep], self._codes[keep], self._frontal[keep]
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self._ids)

    def sample_id(self, index: int) -> str:
        return bytes(self._ids[index]).decode("utf-8")

    def label_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``float32 [14]`` and label mask ``bool [14]`` of sample ``index``
        (``False`` wherever the dataset does not label the observation)."""
        column = _COLUMN_OF_CODE[self._codes[index].astype(np.int64) - UNSTATED]
        rows = np.arange(NUM_OBSERVATIONS)
        return self._values[rows, column], self._counts[rows, column] & self._labelled

    def summary(self) -> dict[str, Any]:
        """Images, views, per observation the count of each label value after mapping
        (with ``unstated`` where the mapping has related findings; observations the
        dataset does not label are listed apart), and the findings that mapped to
        nothing."""
        codes = _CODES if self.mapping.related else _CODES[:-1]  # "unstated" where it can be
        return {
            "images": len(self),
            "frontal": int(self._frontal.sum()),
            "lateral": int((~self._frontal).sum()),
            "observations": {
                name: {_CODE_NAMES[c]: int((self._codes[:, k] == c).sum()) for c in codes}
                for k, name in enumerate(OBSERVATIONS)
                if self._labelled[k]
            },
            "unlabelled": [name for k, name in enumerate(OBSERVATIONS) if not self._labelled[k]],
            "unmapped": dict(self.unmapped.most_common()),
        }
