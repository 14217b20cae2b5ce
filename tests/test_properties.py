"""Property-based tests (hypothesis) of the parsers and the post-processing.

Every input ends in a result or a clear error (a :class:`DollError` that names the file,
line, column or key at fault): never another exception, a hang, or a silently wrong label.
Where a result is checked, it is checked against a small oracle written here, not against
the code under test. Example counts are kept modest so that the file runs in well under a
minute on two CPU cores; each test states its count in ``settings``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from doll_core.data.chexpert_format import CHEXPERT_HEADER
from doll_core.data.imageio import ImageReadError
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_plugins.datasets.chexpert import CheXpert

REPO_ROOT = Path(__file__).resolve().parents[1]

# == 1. CheXpert CSV rows ================================================================

#: The private-use character that marks where a file's bytes are corrupted; generated text
#: never holds it.
_MARK = "\ue000"
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=_MARK), max_size=8
)

#: Label cells: every spelling of 1 / 0 / -1 / blank we accept, near misses, and noise.
_NUMBERS = st.builds(
    lambda sign, whole, fraction, exponent, pad: pad + sign + whole + fraction + exponent + pad,
    st.sampled_from(["", "+", "-"]),
    st.sampled_from(["1", "0", "01", "00", "2", ""]),
    st.sampled_from(["", ".", ".0", ".000", ".5", ".0000000000000001"]),
    st.sampled_from(["", "e0", "E+00", "e-0", "e1", "e99999"]),
    st.sampled_from(["", " ", "\t"]),
)
_LABEL_CELLS = st.one_of(
    _NUMBERS,
    st.sampled_from(
        [
            "",
            " ",
            "\u00a0",
            "nan",
            "inf",
            "-inf",
            "yes",
            "True",
            "0_1",
            "1_0",
            "1,0",
            "1 0",
            "\u0661",
            "\uff11",
            "\u22121",
            "0x1",
            "1.0.0",
            "--1",
            "1e",
            ".",
            "-",
        ]
    ),
    _TEXT,
)
_PATH_CELLS = st.one_of(
    st.sampled_from(
        [
            "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
            "train/p/x.jpg",
            "",
            "../../etc/passwd",
            "/etc/passwd",
            "C:\\x.jpg",
            "a/../../b.jpg",
            "ok.jpg\x00",
        ]
    ),
    _TEXT,
)
_VIEW_CELLS = st.one_of(st.sampled_from(["Frontal", "Lateral", " Frontal ", "frontal"]), _TEXT)


@st.composite
def _rows(draw: st.DrawFn) -> list[str]:
    """A row: mostly CheXpert's 19 cells, sometimes too few or too many, or blank."""
    shape = draw(st.sampled_from(["full"] * 8 + ["blank", "short", "long"]))
    if shape == "blank":
        return []
    row = [draw(_PATH_CELLS), draw(_TEXT), draw(_TEXT), draw(_VIEW_CELLS), draw(_TEXT)]
    row += [draw(_LABEL_CELLS) for _ in OBSERVATIONS]
    if shape == "short":
        return row[: draw(st.integers(1, len(row) - 1))]
    if shape == "long":
        return row + draw(st.lists(_TEXT, min_size=1, max_size=3))
    return row


@st.composite
def _headers(draw: st.DrawFn) -> list[str]:
    """CheXpert's header, padded with blanks (accepted) or with a column wrong."""
    header = list(CHEXPERT_HEADER)
    change = draw(st.sampled_from(["none"] * 5 + ["pad", "drop", "extra", "swap", "rename"]))
    k = draw(st.integers(0, len(header) - 1))
    if change == "pad":
        header[k] = f" {header[k]}\t"
    elif change == "drop":
        del header[k]
    elif change == "extra":
        header.insert(k, draw(_TEXT))
    elif change == "swap":
        header[k], header[-1 - k] = header[-1 - k], header[k]
    elif change == "rename":
        header[k] = header[k].lower() + draw(_TEXT)
    return header


@dataclass
class _CsvCase:
    """A generated CSV file: its records (header first), the physical line where each
    record starts, its bytes, and the record/cell whose text holds undecodable bytes."""

    records: list[list[str]]
    lines: list[int]
    data: bytes
    corrupt: tuple[int, int] | None


@st.composite
def _csv_cases(draw: st.DrawFn) -> _CsvCase:
    records = [draw(_headers()), *draw(st.lists(_rows(), max_size=6))]
    terminator = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    if any("\r" in cell or "\n" in cell for record in records for cell in record):
        quoting = csv.QUOTE_ALL  # the writer quotes a lone CR only when it ends lines
    cells = [(r, c) for r, record in enumerate(records) for c in range(len(record))]
    corrupt = draw(st.one_of(st.none(), st.sampled_from(cells))) if cells else None
    bad_bytes = draw(
        st.binary(min_size=1, max_size=3)
        .map(lambda raw: bytes(b | 0x80 for b in raw))  # no ASCII: no delimiter or newline
        .filter(lambda raw: not _is_utf8(raw))
    )
    if corrupt is not None:
        r, c = corrupt
        cell = records[r][c]
        at = draw(st.integers(0, len(cell)))
        records[r][c] = cell[:at] + _MARK + cell[at:]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=terminator, quoting=quoting)
    lines = []
    for record in records:
        lines.append(len(io.StringIO(buffer.getvalue(), newline="").readlines()) + 1)
        writer.writerow(record)
    text = buffer.getvalue()
    assert list(csv.reader(io.StringIO(text, newline=""))) == records  # the test's own check
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    data = bom + text.encode("utf-8").replace(_MARK.encode("utf-8"), bad_bytes)
    return _CsvCase(records, lines, data, corrupt)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_ORACLE_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?", re.ASCII)


def _oracle_code(cell: str) -> str | None:
    """The label a cell means: "positive", "negative", "uncertain", "blank", or None (junk).
    Accepted: blank or whitespace; a plain ASCII decimal number exactly equal to 1, 0, -1."""
    text = cell.strip()
    if not text:
        return "blank"
    if not _ORACLE_NUMBER.fullmatch(text):
        return None
    mantissa, _, exponent = text.lower().partition("e")
    value = Fraction(mantissa.rstrip(".") or "0") * Fraction(10) ** int(exponent or "0")
    names = {Fraction(1): "positive", Fraction(0): "negative", Fraction(-1): "uncertain"}
    return names.get(value)


def _oracle_label(code: str, uncertainty: str, blank: str) -> tuple[float, bool]:
    """(label value, counts in the loss) of a code under the two policies."""
    if code == "positive":
        return 1.0, True
    if code == "negative":
        return 0.0, True
    if code == "uncertain":
        return (1.0 if uncertainty == "ones" else 0.0), uncertainty != "ignore"
    return 0.0, blank != "ignore"


def _oracle_csv(case: _CsvCase, path: Path) -> tuple[list[str], list[list[str]]]:
    """Either (words the error must contain, []) or ([], the rows that parse)."""
    header, *rows = case.records
    if case.corrupt is not None and case.corrupt[0] == 0:
        return [str(path), "line 1", "not UTF-8"], []
    if [cell.strip() for cell in header] != list(CHEXPERT_HEADER):
        return [str(path), "CheXpert's columns"], []
    good = []
    for r, row in enumerate(rows, start=1):
        line = f"{path}, line {case.lines[r]}:"
        if not row:
            continue
        if case.corrupt is not None and case.corrupt[0] == r:
            c = case.corrupt[1]
            column = repr(CHEXPERT_HEADER[c]) if c < len(CHEXPERT_HEADER) else str(c + 1)
            return [line, "not UTF-8", f"column {column}"], []
        if len(row) != len(CHEXPERT_HEADER):
            return [line, f"{len(row)} cells"], []
        for name, cell in zip(OBSERVATIONS, row[5:], strict=True):
            if _oracle_code(cell) is None:
                return [line, repr(cell), f"column {name!r}"], []
        if "\x00" in row[0]:
            return [line, "NUL", "column 'Path'"], []
        good.append(row)
    return [], good


_POLICIES = st.sampled_from(["ones", "zeros", "ignore"])


@settings(max_examples=300, deadline=None)
@given(
    case=_csv_cases(),
    uncertainty=st.one_of(
        _POLICIES, st.dictionaries(st.sampled_from([*OBSERVATIONS, "default"]), _POLICIES)
    ),
    blank=st.sampled_from(["zeros", "ignore"]),
    frontal_only=st.booleans(),
)
def test_chexpert_csv_gives_the_policy_labels_or_names_the_bad_cell(
    case: _CsvCase, uncertainty: str | dict[str, str], blank: str, frontal_only: bool
) -> None:
    """Random cells (numbers, blanks, junk, unicode), blank rows, rows too short or too
    long, headers with a column wrong, BOM, LF/CRLF/CR endings and undecodable bytes: the
    rows parse to exactly the labels the policies give, or the error names the file, the
    line and the column at fault. A junk cell never becomes a label."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "train.csv"
        path.write_bytes(case.data)
        words, rows = _oracle_csv(case, path)
        try:
            reader = CheXpert(
                root, uncertainty=uncertainty, blank=blank, frontal_only=frontal_only, size=None
            )
        except DollError as exc:
            assert words, f"a valid CSV was refused: {exc}"
            assert all(word in str(exc) for word in words), (words, str(exc))
            return
        assert not words, f"expected an error with {words}, got a reader"
        kept = [row for row in rows if row[3].strip() == "Frontal" or not frontal_only]
        assert len(reader) == len(kept)
        for i, row in enumerate(kept):
            assert reader.sample_id(i) == row[0]
            labels, counts = reader.label_arrays(i)
            for k, (name, cell) in enumerate(zip(OBSERVATIONS, row[5:], strict=True)):
                if isinstance(uncertainty, str):
                    policy = uncertainty
                else:
                    policy = uncertainty.get(name, uncertainty.get("default", "ones"))
                code = _oracle_code(cell)
                assert code is not None
                assert (float(labels[k]), bool(counts[k])) == _oracle_label(code, policy, blank)
            try:  # a path is resolved inside the CSV's folder, or refused
                image = reader.image_path(i)
            except ImageReadError as exc:
                assert exc.reason
            else:
                assert image.resolve().is_relative_to(root.resolve())


# == 2. Experiment files and --set overrides ==============================================

QUICKSTART = REPO_ROOT / "experiments" / "quickstart.toml"


def _toml_value(value: Any) -> str:
    """``value`` as a TOML value (inline tables and arrays; nan and inf as TOML spells)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(type(value))


def _toml_string(text: str) -> str:
    escaped = "".join(
        {'"': '\\"', "\\": "\\\\"}.get(c, c) if 32 <= ord(c) != 127 else f"\\u{ord(c):04x}"
        for c in text
    )
    return f'"{escaped}"'


def _toml_document(document: dict[str, Any]) -> str:
    """A whole document, one ``key = value`` line per top-level key."""
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in document.items())


def _keys(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key of a document, tables and leaves, as paths."""
    found = []
    for key, value in node.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found += _keys(value, (*prefix, key))
    return found


_QUICKSTART_DOCUMENT = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
_QUICKSTART_KEYS = _keys(_QUICKSTART_DOCUMENT)

_SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 8, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, -0.5, 1e-300, 1e300, math.nan, math.inf, -math.inf]),
    st.text(max_size=10),
    st.sampled_from(["", "auto", "resnet18", "none", "all", "../x", "ones"]),
    st.booleans(),
)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=5), _SCALARS, max_size=2),
)


def _set_path(document: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    node = document
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value


@pytest.mark.parametrize("key", _QUICKSTART_KEYS, ids=".".join)
@settings(max_examples=12, deadline=None)
@given(value=_VALUES)
def test_every_experiment_key_takes_any_value_or_names_itself(
    key: tuple[str, ...], value: Any
) -> None:
    """The quick start with one key (every key in turn, tables too) set to a random value
    of a random type: the experiment loads, or the error names that key."""
    from doll_core.experiment.loading import load_experiment, resolve_relative_paths

    document = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
    # the copy lives elsewhere: its data paths are the quick start's, made absolute
    document = resolve_relative_paths(document, QUICKSTART.parent)
    _set_path(document, key, value)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "experiment.toml"
        path.write_text(_toml_document(document), encoding="utf-8")
        try:
            load_experiment(path)
        except DollError as exc:
            dotted = ".".join(key)
            if _non_finite(value):
                assert f"{dotted}" in str(exc) and "not a finite number" in str(exc)
            assert _names_key(str(exc), key), f"{dotted} = {value!r}: {exc}"
        else:
            assert not _non_finite(value), f"{'.'.join(key)} = {value!r} was accepted"


def _model_keys(model: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every field of a pydantic model (and of the models in its fields), as key paths."""
    from pydantic import BaseModel

    found = []
    for name, field in model.model_fields.items():
        found.append((*prefix, name))
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _model_keys(annotation, (*prefix, name))
    return found


def _schema_keys() -> list[tuple[str, ...]]:
    """Every key an experiment file may hold: its sections' fields and, in the stage
    sections, every field of the stage configs (runner-filled ones included)."""
    from doll_core.experiment import sections as config
    from doll_core.labels.config import LabelGenerationConfig
    from doll_core.segmentation.config import FinetuneConfig, PretrainConfig
    from doll_core.training.config import ClassifierTrainingConfig

    keys = _model_keys(config.Experiment, ())
    for task in ("organs", "lungs"):  # the quick start's tasks (a phantom one, a folder)
        keys += _model_keys(config.TaskData, ("data", "tasks", task))
    keys += _model_keys(ClassifierTrainingConfig, ("training",))
    keys += _model_keys(ClassifierTrainingConfig, ("classifiers", "tiny"))
    keys += _model_keys(LabelGenerationConfig, ("explanation",))
    keys += _model_keys(PretrainConfig, ("pretrain",))
    keys += _model_keys(FinetuneConfig, ("finetune",))
    return sorted(set(keys) | set(_QUICKSTART_KEYS))


_SCHEMA_KEYS = _schema_keys()


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(_SCHEMA_KEYS), value=_VALUES)
@example(key=("explanation", "explainer_params"), value=5)  # crashed merging with params
@example(key=("data", "tasks"), value=1)  # crashed resolving relative task roots
@example(key=("training", "lr"), value=math.inf)  # was accepted
@example(key=("training", "epochs"), value=0)  # was named classifiers.NAME.epochs
@example(key=("finetune", "checkpoint"), value="~0")  # no user "0": a traceback
@example(key=("data", "classification", "root"), value="~nosuchuser/x")
def test_every_schema_field_takes_any_value_or_names_itself(
    key: tuple[str, ...], value: Any
) -> None:
    """The quick start with any field of the experiment schema or of a stage config (not
    only the quick start's keys; missing tables are created) set to a random value: the
    experiment loads, or the error names that key; nan and inf are always refused."""
    from doll_core.experiment.loading import load_experiment, resolve_relative_paths

    document = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
    document = resolve_relative_paths(document, QUICKSTART.parent)  # the copy lives elsewhere
    node = document
    for part in key[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key[-1]] = value
    dotted = ".".join(key)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "experiment.toml"
            path.write_text(_toml_document(document), encoding="utf-8")
            load_experiment(path)
    except DollError as exc:
        assert _names_key(str(exc), key), f"{dotted} = {value!r}: {exc}"
        if _non_finite(value):
            assert "not a finite number" in str(exc)
    else:
        assert not _non_finite(value), f"{dotted} = {value!r} was accepted"


def _names_key(message: str, key: tuple[str, ...]) -> bool:
    """Whether an error message names ``key``: as a dotted path, or as its table's dotted
    path with the field's name in the text (a check across fields, or a plugin's own
    check of its parameters: ``classifiers.tiny: std needs 1 value(s)``)."""
    if ".".join(key) in message:
        return True
    parent = ".".join(key[:-1])
    return (
        bool(parent)
        and parent in message
        and re.search(rf"\b{re.escape(key[-1])}\b", message) is not None
    )


def _non_finite(value: Any) -> bool:
    """Whether a value holds nan or inf anywhere."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


_RAW_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "3",
            "-1",
            "0.5",
            "nan",
            "inf",
            "-inf",
            "1e999",
            "0x10",
            "true",
            "[1, 2",
            "[[1]]",
            "{a = 1}",
            "{a = ",
            '"x',
            '"unet"',
            '[8, "all"]',
            "1\nlr = 5",
            "# c",
            "",
            "=",
        ]
    ),
    _SCALARS.map(_toml_value),
)
_DOTTED = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4).map(".".join)


def _existing_depth(key: tuple[str, ...]) -> int:
    """How many leading parts of ``key`` the quick start already has."""
    node: Any = _QUICKSTART_DOCUMENT
    for depth, part in enumerate(key):
        if not isinstance(node, dict) or part not in node:
            return depth
        node = node[part]
    return len(key)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.one_of(st.text(max_size=20), st.tuples(_DOTTED, _RAW_VALUES).map("=".join)), max_size=4
    )
)
def test_any_override_strings_give_a_document_or_a_clear_error(items: list[str]) -> None:
    """``--set`` strings of any text: a document with the values set, or a DollError."""
    from doll_core.experiment.overrides import apply_overrides, parse_value, split_assignment

    try:
        result = apply_overrides(_QUICKSTART_DOCUMENT, items)
    except DollError as exc:
        assert "--set" in str(exc) or "cannot set" in str(exc)
        return
    assert isinstance(result, dict)
    if items:  # the last item's value is where its key says
        key, raw = split_assignment(items[-1])
        node: Any = result
        for part in key.split("."):
            node = node[part]
        expected = parse_value(raw)
        assert node == expected or (isinstance(expected, float) and math.isnan(node))


@settings(max_examples=200, deadline=None)
@given(raw=_RAW_VALUES)
def test_a_set_value_is_one_toml_value_or_the_text_itself(raw: str) -> None:
    """``--set KEY=TEXT``: TEXT is one TOML value, or else the bare string TEXT; never the
    first of several TOML keys (``1\nlr = 5`` must not quietly become 1)."""
    from doll_core.experiment.overrides import parse_value

    value = parse_value(raw)
    try:
        document = tomllib.loads(f"value = {raw.strip()}")
    except tomllib.TOMLDecodeError:
        assert value == raw.strip()
        return
    if len(document) != 1:
        assert value == raw.strip()
    elif not _non_finite(value):
        assert value == document["value"]


@settings(max_examples=150, deadline=None)
@given(
    key=st.one_of(st.sampled_from(_QUICKSTART_KEYS).map(".".join), _DOTTED),
    raw=_RAW_VALUES,
)
def test_any_set_on_the_quickstart_loads_or_names_its_key(key: str, raw: str) -> None:
    """``doll run quickstart.toml --set KEY=VALUE`` with any key and value text: the
    experiment loads, or the error names the key (its first part the file does not have)."""
    from doll_core.experiment.loading import load_experiment

    item = f"{key}={raw}"
    try:
        load_experiment(QUICKSTART, [item])
    except DollError as exc:
        parts = tuple(item.partition("=")[0].strip().split("."))
        named = parts[: _existing_depth(parts) + 1]
        assert _names_key(str(exc), named) or "--set" in str(exc), (key, raw, str(exc))


# == 3. Attribution maps with NaN, Inf, constant, huge and tiny values ====================

_SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, 3e38, -3e38, 1e-30, -1e-30, 1.0]


@st.composite
def _raw_maps(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """``maps [B, T, H, W]`` as an explainer returns them, and ``targets [B, T]`` (-1: no
    target, whose map is zero): each map random, constant, zero, huge, tiny or sparse, and
    some holding NaN or Inf."""
    b, t = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = np.random.default_rng(seed)
    maps = np.zeros((b, t, h, w), dtype=np.float32)
    targets = np.zeros((b, t), dtype=np.int64)
    for i in range(b):
        for j in range(t):
            kind = draw(
                st.sampled_from(
                    ["random", "constant", "zero", "huge", "tiny", "sparse", "special", "none"]
                )
            )
            if kind == "none":
                targets[i, j] = -1
                continue
            targets[i, j] = draw(st.integers(0, 13))
            scale = {"huge": 3e38, "tiny": 1e-30}.get(kind, 1.0)
            values = generator.uniform(-1.0, 1.0, (h, w)) * scale
            if kind == "constant":
                values[:] = draw(st.sampled_from(_SPECIAL[3:]))
            elif kind == "zero":
                values[:] = 0.0
            elif kind == "sparse":  # one positive pixel: under a 99th percentile
                values[:] = 0.0
                values[generator.integers(h), generator.integers(w)] = 1.0
            elif kind == "special":
                count = draw(st.integers(1, h * w))
                cells = generator.choice(h * w, count, replace=False)
                values.flat[cells] = [draw(st.sampled_from(_SPECIAL)) for _ in cells]
            maps[i, j] = values.astype(np.float32)
    return torch.from_numpy(maps), torch.from_numpy(targets)


_POSTPROCESS = st.builds(
    dict,
    sign=st.sampled_from(["positive", "absolute", "none"]),
    smooth_sigma=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    clip_percentile=st.sampled_from([None, 50.0, 99.0, 100.0]),
    gamma=st.sampled_from([None, 0.5, 2.0]),
    gate=st.sampled_from([None, 0.0, 0.5, 1.0]),
    binarize=st.sampled_from(["none", "threshold", "topk", "otsu"]),
    threshold=st.sampled_from([0.0, 0.5, 1.0]),
    top_k_percent=st.sampled_from([0.1, 5.0, 100.0]),
)


def _has_signal(raw: np.ndarray, sign: str) -> bool:
    """Oracle: a finite map has signal when, after the sign step, it is not flat at its
    floor (zero for positive/absolute; min(minimum, 0) for none)."""
    values = raw.astype(np.float64)
    if sign == "positive":
        values = np.clip(values, 0, None)
    elif sign == "absolute":
        values = np.abs(values)
    floor = min(values.min(), 0.0)
    return bool(values.max() > floor)


@settings(max_examples=250, deadline=None)
@given(case=_raw_maps(), options=_POSTPROCESS, seed=st.integers(0, 2**31 - 1))
def test_raw_maps_become_finite_labels_and_bad_maps_are_counted(
    case: tuple[torch.Tensor, torch.Tensor], options: dict[str, Any], seed: int
) -> None:
    """Explainer output -> check -> post-processing -> fusion -> uint8 labels: soft maps
    are finite and in [0, 1], a map holding NaN/Inf is counted and all zero, a map with
    no signal is counted and zero, every other real map reaches 1, and nothing divides
    by zero."""
    from doll_core.attribution.api import check_attributions
    from doll_core.attribution.postprocess import PostprocessConfig, postprocess
    from doll_core.labels.fusion import fuse_maps
    from doll_core.registry import get_registry

    maps, targets = case
    images = torch.zeros(maps.shape[0], 1, *maps.shape[-2:])
    checked, bad = check_attributions(maps.clone(), images, targets, "fuzz")
    numpy_maps, real = maps.numpy(), (targets >= 0).numpy()
    finite = np.isfinite(numpy_maps).reshape(*numpy_maps.shape[:2], -1).all(axis=2)
    assert bad == int((~finite).sum())
    assert torch.isfinite(checked).all()
    config = PostprocessConfig(**options)
    probabilities = torch.from_numpy(np.random.default_rng(seed).uniform(size=targets.shape))
    post = postprocess(checked, config, targets=targets, probabilities=probabilities.float())
    soft = post.soft
    assert soft.shape == maps.shape and soft.dtype == torch.float32
    assert torch.isfinite(soft).all() and soft.min() >= 0 and soft.max() <= 1
    signal = np.array(
        [
            [real[i, j] and finite[i, j] and _has_signal(numpy_maps[i, j], config.sign)
             for j in range(maps.shape[1])]
            for i in range(maps.shape[0])
        ]
    )  # fmt: skip
    assert post.no_signal == int((real & ~signal).sum())
    gated = np.zeros_like(signal)
    if config.gate is not None:
        gated = probabilities.numpy() < config.gate
    for i in range(maps.shape[0]):
        for j in range(maps.shape[1]):
            top = float(soft[i, j].max())
            if not signal[i, j] or gated[i, j]:
                assert top == 0.0, (i, j)
            else:  # scaled to [0, 1] per map: its highest pixel is 1
                assert top == pytest.approx(1.0, abs=1e-5), (i, j, numpy_maps[i, j])
    if post.binary is not None:
        assert post.binary.dtype == torch.bool and post.binary.shape == maps.shape
        if config.binarize in ("topk", "otsu"):
            assert not (post.binary & (soft <= 0)).any()
        assert not post.binary[~torch.from_numpy(signal)].any()
    for name in ("mean", "max", "geometric_mean"):
        fusion = get_registry().create("fusion", name)
        stacked = torch.stack([soft, soft.flip(0)])
        fused = fuse_maps(fusion, name, stacked, torch.ones(stacked.shape[:3]))
        labels = torch.round(fused * 255).to(torch.uint8)
        assert fused.shape == maps.shape and torch.isfinite(fused).all()
        nothing = ~(torch.from_numpy(signal) | torch.from_numpy(signal).flip(0))
        assert not labels[nothing].any()


@settings(max_examples=100, deadline=None)
@given(case=_raw_maps(), options=_POSTPROCESS, power=st.integers(-60, 60))
def test_post_processing_does_not_depend_on_the_scale_of_a_map(
    case: tuple[torch.Tensor, torch.Tensor], options: dict[str, Any], power: int
) -> None:
    """Scaling a (finite, ordinary) map by a power of two scales every step exactly, so
    the soft label is the same: tiny attributions are not lost to a fixed epsilon."""
    from doll_core.attribution.postprocess import PostprocessConfig, postprocess

    maps, targets = case
    maps = torch.where(torch.isfinite(maps) & (maps.abs() < 1e3), maps, torch.zeros_like(maps))
    maps = torch.where(maps.abs() > 1e-3, maps, torch.zeros_like(maps))  # no subnormals
    config = PostprocessConfig(**{**options, "gate": None})
    scaled = maps * 2.0**power
    first = postprocess(maps, config, targets=targets)
    second = postprocess(scaled, config, targets=targets)
    torch.testing.assert_close(second.soft, first.soft, atol=1e-5, rtol=0)
    assert first.no_signal == second.no_signal


# == 4. Localisation and segmentation metrics, mask resizing, mask files ===================


@st.composite
def _map_and_mask(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A small map (few distinct values, so that ties happen; sometimes NaN/Inf) and a
    random mask of the same random shape."""
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    values = draw(
        st.lists(
            st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, -0.5, 2.0, math.nan, math.inf, -math.inf]),
            min_size=h * w,
            max_size=h * w,
        )
    )
    mask = draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
    return np.array(values).reshape(h, w), np.array(mask).reshape(h, w)


def _oracle_localization(
    soft: np.ndarray, mask: np.ndarray, binary: np.ndarray
) -> dict[str, float]:
    """Each localisation score by its definition, pixel by pixel (finite maps only)."""
    s, m, b = soft.ravel(), mask.ravel(), binary.ravel()
    nan = math.nan
    if not m.any():
        return {name: nan for name in ("pointing_game", "iou", "dice", "top_k_intersection",
                                        "relevance_mass_accuracy", "pixel_auroc")}  # fmt: skip
    flat = not (s != 0).any()
    tops = [i for i in range(len(s)) if s[i] == s.max()]
    positive = np.clip(s, 0, None)
    pairs = [
        1.0 if s[p] > s[n] else 0.5 if s[p] == s[n] else 0.0
        for p in range(len(s)) if m[p] for n in range(len(s)) if not m[n]
    ]  # fmt: skip
    return {
        "pointing_game": 0.0 if flat else sum(m[i] for i in tops) / len(tops),
        "iou": (b & m).sum() / (b | m).sum(),
        "dice": 2 * (b & m).sum() / (b.sum() + m.sum()),
        "top_k_intersection": 0.0 if flat else None,  # checked without ties below
        "relevance_mass_accuracy": positive[m].sum() / positive.sum() if positive.sum() else nan,
        "pixel_auroc": sum(pairs) / len(pairs) if pairs else nan,
    }


@settings(max_examples=200, deadline=None)
@given(case=_map_and_mask(), threshold=st.sampled_from([0.0, 0.5, 1.0]))
def test_localization_scores_match_their_definitions(
    case: tuple[np.ndarray, np.ndarray], threshold: float
) -> None:
    """Every localisation metric on tiny maps of random shape with ties, empty masks and
    all-zero maps equals its pixel-by-pixel definition (nan where undefined); on maps with
    NaN/Inf every score is nan or in [0, 1], never an exception."""
    from doll_core.metrics.localization import LOCALIZATION_METRICS

    values, mask = case
    soft = torch.from_numpy(values)[None].float()
    binary = soft >= threshold
    scores = {
        metric.name: float(metric(soft, torch.from_numpy(mask)[None], binary)[0])
        for metric in LOCALIZATION_METRICS
    }
    for name, score in scores.items():
        assert math.isnan(score) or 0.0 <= score <= 1.0, (name, score)
    if not np.isfinite(values).all():
        return
    expected = _oracle_localization(values, mask, binary[0].numpy())
    for name, score in scores.items():
        want = expected[name]
        if name == "top_k_intersection" and want is None:
            k = int(mask.sum())
            ordered = np.sort(values.ravel())[::-1]
            if k < ordered.size and ordered[k - 1] == ordered[k]:
                continue  # a tie at the k-th value: which pixel is in the top k is arbitrary
            top = np.argsort(-values.ravel(), kind="stable")[:k]
            want = float(mask.ravel()[top].mean())
        assert (math.isnan(score) and math.isnan(want)) or score == pytest.approx(want), name


@st.composite
def _segmentations(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    b, k = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return rng.random((b, k, h, w)) < density, rng.random((b, k, h, w)) < 0.3


@settings(max_examples=150, deadline=None)
@given(case=_segmentations(), split=st.integers(0, 3), other=_segmentations())
def test_segmentation_scores_match_counted_pixels(
    case: tuple[np.ndarray, np.ndarray], split: int, other: tuple[np.ndarray, np.ndarray]
) -> None:
    """IoU and Dice summed over a random split into batches (and merged) equal the counts
    over all pixels; a class absent everywhere is nan and left out of the means; a
    prediction whose shape differs from the truth is a DollError, not a broadcast."""
    from doll_core.metrics.segmentation import SegmentationScores

    prediction, truth = case
    classes = [f"c{i}" for i in range(prediction.shape[1])]
    scores, second = SegmentationScores(classes), SegmentationScores(classes)
    cut = min(split, prediction.shape[0])
    scores.update(torch.from_numpy(prediction[:cut]), torch.from_numpy(truth[:cut]))
    second.update(torch.from_numpy(prediction[cut:]), torch.from_numpy(truth[cut:]))
    scores.merge(second)
    iou, dice = [], []
    for c in range(len(classes)):
        p, t = prediction[:, c], truth[:, c]
        union, total = (p | t).sum(), p.sum() + t.sum()
        iou.append((p & t).sum() / union if union else math.nan)
        dice.append(2 * (p & t).sum() / total if total else math.nan)
    np.testing.assert_allclose(scores.iou(), iou)
    np.testing.assert_allclose(scores.dice(), dice)
    summary = scores.summary()
    defined = [v for v in iou if not math.isnan(v)]
    if defined:
        assert summary["miou"] == pytest.approx(sum(defined) / len(defined))
    else:
        assert math.isnan(summary["miou"])  # type: ignore[arg-type]
    wrong_prediction, _ = other
    if wrong_prediction.shape != prediction.shape:
        with pytest.raises(DollError, match="segmentation scores"):
            scores.update(torch.from_numpy(wrong_prediction), torch.from_numpy(truth))


@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(1, 3),
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    size=st.one_of(st.none(), st.tuples(st.integers(1, 12), st.integers(1, 12))),
    dtype=st.sampled_from([torch.bool, torch.uint8, torch.float32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_mask_resizing_is_nearest_neighbour_of_any_shape(
    k: int, shape: tuple[int, int], size: tuple[int, int] | None, dtype: torch.dtype, seed: int
) -> None:
    """``resize_mask`` of any shape to any size: the shape asked for, the same dtype, and
    each output pixel the input pixel at floor((i + 0.5) * in / out)."""
    from doll_core.data.imageio import resize_mask

    rng = np.random.default_rng(seed)
    mask = torch.from_numpy(rng.random((k, *shape)) < 0.5).to(dtype)
    resized = resize_mask(mask, size)
    if size is None:
        assert resized is mask
        return
    assert tuple(resized.shape) == (k, *size) and resized.dtype == dtype
    rows = np.minimum(((np.arange(size[0]) + 0.5) * shape[0] / size[0]).astype(int), shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * shape[1] / size[1]).astype(int), shape[1] - 1)
    expected = mask.numpy()[:, rows][:, :, cols]
    np.testing.assert_array_equal(resized.numpy(), expected)


_MASK_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"]


def _mask_image(
    mode: str, shape: tuple[int, int], rng: np.random.Generator, top: int
) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A mask file's image in ``mode`` with values up to ``top``, and the oracle: which
    pixels it shows as foreground (non-black, not transparent) and its stored values."""
    h, w = shape
    if mode == "1":
        stored = rng.random((h, w)) < 0.5
        return Image.fromarray(stored), stored, stored.astype(np.int64)
    if mode == "I;16":
        stored = rng.integers(0, top + 1, (h, w)).astype(np.uint16)
        return Image.fromarray(stored), stored > 0, stored.astype(np.int64)
    if mode == "P":
        stored = rng.integers(0, min(top, 255) + 1, (h, w)).astype(np.uint8)
        palette = rng.integers(0, 2, (256, 3)).astype(np.uint8) * 255  # black or coloured
        image = Image.fromarray(stored, mode="P")
        image.putpalette(palette.ravel().tolist())
        return image, palette[stored].max(axis=2) > 0, stored.astype(np.int64)
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    stored = rng.integers(0, min(top, 255) + 1, (h, w, channels)).astype(np.uint8)
    if channels == 1:
        return Image.fromarray(stored[:, :, 0]), stored[:, :, 0] > 0, stored[:, :, 0]
    if mode in ("RGBA", "LA"):
        shown = (stored[:, :, :-1].max(axis=2) > 0) & (stored[:, :, -1] > 0)
    else:
        shown = stored.max(axis=2) > 0
    return Image.fromarray(stored, mode=mode), shown, stored.astype(np.int64)


@settings(max_examples=80, deadline=None)
@given(
    layout=st.sampled_from(["binary", "index"]),
    n_classes=st.integers(1, 3),
    images=st.lists(
        st.tuples(
            st.tuples(st.integers(1, 10), st.integers(1, 10)),  # image shape
            st.lists(  # per class: mask mode, other shape or not, missing, corrupt
                st.tuples(
                    st.sampled_from(_MASK_MODES),
                    st.one_of(st.none(), st.tuples(st.integers(1, 10), st.integers(1, 10))),
                    st.sampled_from(["ok"] * 6 + ["missing", "corrupt"]),
                ),
                min_size=3,
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=3,
    ),
    size=st.one_of(st.none(), st.integers(8, 12)),
    seed=st.integers(0, 2**31 - 1),
)
def test_segfolder_masks_of_any_shape_and_mode_read_or_are_skipped(
    layout: str,
    n_classes: int,
    images: list[tuple[tuple[int, int], list[tuple[str, tuple[int, int] | None, str]]]],
    size: int | None,
    seed: int,
) -> None:
    """Mask files of random modes (1, L, P, RGB, RGBA, LA, 16-bit) and shapes, missing or
    corrupt, in both segfolder layouts: each sample is read with exactly the foreground
    its files show (index masks: exactly their values), or skipped with a reason that
    names the file; never an exception."""
    from doll_core.data.samples import SkippedSample
    from doll_plugins.datasets.segfolder import SegFolder

    rng = np.random.default_rng(seed)
    classes = [f"class{k}" for k in range(n_classes)]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").mkdir()
        expected: list[tuple[str, Any]] = []  # ("skip", words) or ("read", masks or None)
        for i, (shape, per_class) in enumerate(images):
            stem = f"img{i}"
            pixels = rng.integers(0, 256, shape).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{stem}.png")
            files = per_class[:n_classes] if layout == "binary" else per_class[:1]
            # the reader finds every file first, then reads them all, then compares sizes
            missing: list[tuple[str, Any]] = []
            unreadable: list[tuple[str, Any]] = []
            wrong_size: list[tuple[str, Any]] = []
            masks, shapes = [], set()
            for k, (mode, other_shape, state) in enumerate(files):
                where = root / "masks" / (classes[k] if layout == "binary" else "")
                where.mkdir(parents=True, exist_ok=True)
                path = where / f"{stem}.png"
                if state == "missing":
                    missing.append(("skip", ["no ", "mask", stem]))
                    continue
                if state == "corrupt":
                    path.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(20))
                    unreadable.append(("skip", [str(path), "corrupt"]))
                    continue
                top = n_classes + 1 if layout == "index" else 255
                image, shown, stored = _mask_image(mode, other_shape or shape, rng, top)
                image.save(path)
                shapes.add(shown.shape)
                if layout == "binary":
                    masks.append(shown)
                    if len(shapes) > 1:
                        wrong_size.append(("skip", [str(path), "one size"]))
                elif stored.ndim == 3:
                    unreadable.append(("skip", [str(path), "one channel"]))
                elif stored.max() > n_classes:
                    unreadable.append(("skip", [str(path), f"value {stored.max()}"]))
                else:
                    masks = [stored == c + 1 for c in range(n_classes)]
            problems = missing + unreadable + wrong_size
            outcome = problems[0] if problems else None
            if outcome is None:
                same = size is None and shapes == {tuple(shape)}
                outcome = ("read", np.stack(masks) if same else None)
            expected.append(outcome)
        for k in range(n_classes if layout == "binary" else 0):
            (root / "masks" / classes[k]).mkdir(parents=True, exist_ok=True)
        reader = SegFolder(root, classes=classes, size=size, on_error="skip")
        for i, (kind, detail) in enumerate(expected):
            sample = reader[i]
            if kind == "skip":
                assert isinstance(sample, SkippedSample), (i, detail)
                assert all(word in f"{sample.path}: {sample.reason}" for word in detail), (
                    detail,
                    sample,
                )
                continue
            assert not isinstance(sample, SkippedSample), sample
            height, width = sample["image"].shape[-2:]
            assert tuple(sample["mask"].shape) == (n_classes, height, width)
            assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
            if detail is not None:
                np.testing.assert_array_equal(sample["mask"].numpy(), detail.astype(np.float32))


# -- devices and label-store records ---------------------------------------------------------

_DEVICE_WORDS = st.sampled_from(["auto", "cpu", "cuda", "mps", "tpu", "xla", "meta", "cuda:"])


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(st.text(max_size=12), (_DEVICE_WORDS.flatmap(
    lambda word: st.builds(lambda tail: word + tail, st.text(max_size=4))))))  # fmt: skip
def test_a_device_name_is_one_of_the_known_forms_or_named(name: str) -> None:
    """``auto``, or ``cpu``, ``mps`` or ``cuda`` with or without ``:N`` (N a decimal
    number without leading zeros, as torch parses it) pass; anything else is a DollError
    that names the string."""
    from doll_core.devices import check_device

    form = r"auto|(cpu|mps|cuda)(:(0|[1-9][0-9]*))?"
    known = re.fullmatch(form, name, flags=re.ASCII) is not None
    try:
        assert check_device(name) == name and known
    except DollError as exc:
        assert not known and repr(name) in str(exc)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_STORE_KEYS = ("config_hash", "total_shards", "images", "shards", "label_size", "complete")


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished label store of the phantom (saliency of a random tiny CNN)."""
    from doll_core.checkpoint import ClassifierMeta, build_classifier, save_classifier
    from doll_core.configuration import parse_config
    from doll_core.labels.config import LabelGenerationConfig
    from doll_core.labels.generate import generate_labels
    from doll_core.phantom.writer import PhantomSpec, write_phantom

    root = tmp_path_factory.mktemp("store")
    write_phantom(root / "phantom", PhantomSpec(n_train=6, n_valid=2, n_organs=1, size=32))
    meta = ClassifierMeta(backbone="tiny_cnn", backbone_params={"width": 4}, in_channels=1,
                          image_size=32, mean=(0.5,), std=(0.25,))  # fmt: skip
    torch.manual_seed(0)
    save_classifier(root / "tiny.pt", build_classifier(meta), meta)
    values = {"data": str(root / "phantom"), "classifiers": [str(root / "tiny.pt")],
              "explainer": "saliency", "label_size": 8, "shard_size": 4,
              "device": "cpu"}  # fmt: skip
    generate_labels(parse_config(LabelGenerationConfig, values), root / "labels")
    return root / "labels"


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["config.json", "manifest.json"]),
    content=st.one_of(
        st.binary(max_size=40),
        _JSON.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(_STORE_KEYS), _JSON, max_size=4).map(
            lambda v: json.dumps(v).encode()
        ),
    ),
)
def test_any_label_store_record_opens_or_names_its_file(
    finished_store: Path, name: str, content: bytes
) -> None:
    """A store whose ``config.json`` or ``manifest.json`` holds anything: opening it gives
    a store or a DollError naming the file, and ``doll doctor``'s check never raises."""
    from doll_core.labels.store import LabelStore, check_store

    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "labels"
        store.mkdir()
        for path in finished_store.iterdir():
            (store / path.name).write_bytes(path.read_bytes())
        (store / name).write_bytes(content)
        check_store(store)
        try:
            opened = LabelStore(store)
        except DollError as exc:
            assert str(store) in str(exc) or name in str(exc), str(exc)
        else:
            for image_id in opened.ids:
                opened.labels(image_id)
