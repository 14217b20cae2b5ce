"""Reading DoLL's own files safely and with checks: ``torch.save`` payloads (checkpoints,
states, label shards) and JSON records, neither trusted."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from doll_core._version import __version__
from doll_core.digests import sha256_remembered
from doll_core.errors import DollError


def untrusted_pickle_message(path: Path, what: str) -> str:
    """What to say when a file holds pickled objects that ``weights_only`` refuses."""
    return (
        f"{path} ({what}) holds pickled Python objects, which can run code when loaded; "
        "DoLL loads only tensors and plain data. If you trust where the file came from, "
        f"convert it once: doll convert-weights {path} CONVERTED.pt --trusted "
        "(it keeps the tensors and drops everything else)"
    )


def _torch_file_start(path: Path) -> bool:
    """Whether ``path`` starts as torch.save's files do: a zip archive, or a pickle
    (protocol 2 or later, as the legacy format writes), or cannot be read to tell."""
    try:
        with path.open("rb") as handle:
            start = handle.read(4)
    except OSError:
        return True
    return start.startswith(b"PK\x03\x04") or start[:1] == b"\x80"


def safe_torch_load(path: str | Path, what: str, *, convertible: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain data only, no
    code runs. A file with other pickled objects is refused, with how to convert it when
    ``convertible`` (a user's weights or checkpoint); a file only DoLL writes (a training
    state, a label shard) that holds them is damaged or not DoLL's, and is refused without
    that advice, which would unpickle it. A file that is neither a zip archive nor a
    pickle (a text file, zeroed bytes) is said to be no PyTorch file; any other failure (a
    truncated archive) is one :class:`DollError` naming the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DollError(f"{what} not found: {path}") from None
    except Exception as exc:
        if not _torch_file_start(path):
            raise DollError(
                f"{path} is not a readable DoLL {what}: it is not a PyTorch file (neither the "
                "zip archive torch.save writes nor a pickle): damaged, or another kind of file"
            ) from None
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
            if convertible:
                raise DollError(untrusted_pickle_message(path, what)) from None
            raise DollError(
                f"{path} is not a readable DoLL {what}: it holds pickled Python objects that "
                "DoLL never writes there (the file is damaged, or was not written by DoLL), "
                "so it is not loaded"
            ) from None
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise DollError(
            f"{path} is not a readable DoLL {what}: it is truncated or corrupted "
            f"({type(exc).__name__}: {first_line})"
        ) from None


#: A finished stage's record (its files' SHA-256 under ``"files"``), read here so that
#: every reader of a file in a stage folder checks the checksum recorded for it.
STAGE_RECORD = "stage.json"


def check_stage_checksum(path: Path, what: str) -> None:
    """When ``path`` lies in a finished stage folder whose record lists it, check its
    SHA-256 against the record (a file changed or corrupted since the stage finished).
    A missing or garbled record is left to ``doll doctor`` and the runner, which name it.

    :raises DollError: naming the file, the record and what to do.
    """
    record = path.parent / STAGE_RECORD
    try:
        files = json.loads(record.read_text()).get("files")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return
    recorded = files.get(path.name) if isinstance(files, dict) else None
    if isinstance(recorded, str) and sha256_remembered(path) != recorded:
        raise DollError(
            f"{path} ({what}) does not match the SHA-256 its stage recorded in {record}: it "
            "changed or was corrupted since the stage finished, so it is not used; doll "
            "doctor names what depends on it, and doll run --resume recomputes the stage"
        )


def load_payload(path: Path, *, file_format: str, max_version: int, what: str) -> dict[str, Any]:
    """Load ``path`` with ``weights_only=True`` (no code runs) and check that it is a dict
    of ``file_format`` at a version this DoLL reads, and, in a finished stage folder, that
    it matches the checksum recorded there; every failure names the file."""
    if not path.is_file():
        raise DollError(f"{what} not found: {path}")
    check_stage_checksum(path, what)
    payload = safe_torch_load(path, what)
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DollError(f"{path} is not a DoLL {what} (format: {found!r})")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise DollError(
            f"{path} has {what} format version {version!r}; this DoLL ({__version__}) reads "
            f"versions up to {max_version}: upgrade DoLL"
        )
    return payload


def load_failure(exc: DollError, path: Path) -> str:
    """What :func:`safe_torch_load` (or a reader built on it) said, without the path."""
    text = str(exc)
    if "pickled Python objects" in text:
        return "holds pickled Python objects, which DoLL refuses to load (doll convert-weights)"
    if "checksum" in text:
        return "SHA-256 does not match manifest.json (corrupted shard)"
    inner = re.search(r"\((\w+(?:Error|Exception)[^)]*)\)\s*$", text)
    if inner is not None:
        first = inner.group(1).split(". ")[0]  # torch adds paragraphs of advice
        return f"does not load (truncated or corrupted?): {first}"
    return text.replace(str(path), path.name)


def read_json(path: Path) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, why it cannot be read)``."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not readable JSON ({type(exc).__name__}: {str(exc).splitlines()[0]})"
