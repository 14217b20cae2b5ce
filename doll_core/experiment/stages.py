"""Stage folders keyed by what determines their output, so finished work is reused.

A stage's key is a hash of its kind, the settings its caller gives (the stage functions
give what :func:`~doll_core.configuration.settings_key` derives from the fields'
declarations, which leave out the device and DataLoader workers) and the keys of the
stages it reads. Its folder is
``STAGES/<kind>-<label>-<key>``; a ``stage.json`` written last (atomically) marks it done.
A folder without ``stage.json`` is an interrupted stage: it is continued with ``resume``
(after the leftovers of writes the kill cut short are removed), and refused otherwise, so
that nothing half-written is ever taken for a result.

``stage.json`` also records the SHA-256 of every file the stage wrote next to it
(checkpoints, metrics); a finished stage whose files no longer match (a truncated, zeroed
or garbled checkpoint, which ``torch.load`` may read without complaint) is never reused:
it is refused with the file's name, and recomputed with ``resume``.

Next to the stage records, ``doll run`` records how it was started in the run folder's
``run.json`` (:func:`write_run_record`), which ``doll doctor`` reads to replay the run.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doll_core._version import __version__
from doll_core.atomic import atomic_write_text, remove_temporaries
from doll_core.digests import sha256_remembered
from doll_core.errors import DollError
from doll_core.links import refuse_link, refuse_links_leaving
from doll_core.payloads import STAGE_RECORD, read_json
from doll_core.training.distributed import from_rank_zero, launched_rank

#: Bump when a stage's output format or meaning changes, so old folders are not reused.
STAGE_FORMAT = 1
DONE = STAGE_RECORD


def stage_key(kind: str, settings: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """16 hex digits from the stage kind, its JSON settings (those that enter its key, as
    :func:`~doll_core.configuration.settings_key` derives them) and its inputs' keys."""
    payload = {
        "format": STAGE_FORMAT,
        "kind": kind,
        "settings": dict(settings),
        "inputs": dict(inputs),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Files a stage keeps only to resume; a finished stage never resumes, so they go.
RESUME_ONLY = ("state.pt",)


def drop_resume_state(folder: Path) -> None:
    """Delete a finished stage's resume state (a training run's ``state.pt`` holds the
    model and optimiser: 3-4x the weights, 170 MB for a U-Net on ResNet-18), so that a
    grid of hundreds of fine-tunings does not fill the disk."""
    for name in RESUME_ONLY:
        (folder / name).unlink(missing_ok=True)


#: Subfolders of a stage whose files ``stage.json`` records too: a label stage's store
#: (its shards, manifest and config), which downstream stages read.
CHECKED_SUBFOLDERS = ("labels",)


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of the files directly in a stage folder and in its
    :data:`CHECKED_SUBFOLDERS` (named ``labels/shard-00000.pt``), except ``stage.json``,
    the resume state and hidden files (leftovers of interrupted writes)."""
    digests = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in (DONE, *RESUME_ONLY) and path.name[0] != ".":
            digests[path.name] = sha256_remembered(path)
    for name in CHECKED_SUBFOLDERS:
        sub = folder / name
        for path in sorted(sub.iterdir()) if sub.is_dir() else []:
            if path.is_file() and path.name[0] != ".":
                digests[f"{name}/{path.name}"] = sha256_remembered(path)
    return digests


def changed_file(folder: Path, recorded: dict[str, str]) -> str | None:
    """The first file whose SHA-256 is not the one ``stage.json`` recorded (or that is
    missing), or ``None``."""
    for name, digest in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if sha256_remembered(path) != digest:
            return f"{path} does not match the checksum in {DONE}"
    return None


#: The run folder's record of how its last ``doll run`` was started: ``{"device": ...}``.
RUN_RECORD = "run.json"


def write_run_record(out: Path, *, device: str) -> None:
    """Record in the run folder ``out`` that ``doll run`` started there on ``device`` (its
    ``--device``, or the experiment's), replacing the record of an earlier start."""
    atomic_write_text(out / RUN_RECORD, json.dumps({"device": device}, indent=2) + "\n")


def recorded_device(run: Path) -> str | None:
    """The device the last ``doll run`` in ``run`` recorded, or ``None`` (no readable
    record: a run folder of an older DoLL, whose replay then uses the experiment's own
    device)."""
    record, _ = read_json(run / RUN_RECORD)
    device = record.get("device") if isinstance(record, dict) else None
    return device if isinstance(device, str) else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")[:48] or "stage"


@dataclass(frozen=True)
class StageCall:
    """One stage a run asks for: what it is, its settings and inputs, the key they give and
    the folder that key names."""

    kind: str
    label: str
    settings: Mapping[str, Any]
    inputs: Mapping[str, str]
    key: str
    folder: Path


@dataclass
class StageRecord:
    """What one stage did in this run."""

    kind: str
    label: str
    key: str
    folder: Path
    reused: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "key": self.key,
            "folder": str(self.folder),
            "reused": self.reused,
            "seconds": round(self.seconds, 2),
            "info": self.info,
        }


class StageCache:
    """Runs or reuses stages under ``root``.

    :param resume: continue stages whose folder exists without ``stage.json``.
    :param log: called with one line per stage event.
    """

    #: True for a cache that only plans (``doll doctor``): no stage runs, and data that an
    #: unfinished stage would make may be missing
    planning = False

    def __init__(
        self, root: str | Path, *, resume: bool = False, log: Callable[[str], None] | None = None
    ) -> None:
        self.root = Path(root)
        self.resume = resume
        self.log = log or (lambda line: None)
        self.records: list[StageRecord] = []
        self.computed: dict[str, int] = {}

    def folder(self, kind: str, label: str, key: str) -> Path:
        return self.root / f"{kind}-{_slug(label)}-{key}"

    def _status(self, folder: Path) -> tuple[str, dict[str, Any]]:
        """``("done", stage.json)``, ``("interrupted", {})`` or ``("new", {})``; an
        interrupted stage without ``resume`` is refused, and so is a stage folder that is a
        symbolic link (nothing is written through it). The folder exists afterwards."""
        done = refuse_link(folder / DONE, within=self.root)
        if done.is_file():
            try:
                saved = json.loads(done.read_text())
                problem = changed_file(folder, dict(saved.get("files") or {}))
            except (ValueError, AttributeError, TypeError):  # garbled stage.json
                problem = f"{done} is not readable"
            if problem is None:
                return "done", saved
            if not self.resume:
                raise DollError(
                    f"{problem} (changed or corrupted since its stage finished), so the "
                    f"stage {folder.name} is not reused; pass --resume to recompute the stage"
                )
            self.log(f"{folder.name}: {problem}; recomputing the stage")
            done.unlink()
        if folder.exists():
            if not self.resume:
                raise DollError(
                    f"stage folder {folder} holds an interrupted stage; "
                    "pass --resume to continue it"
                )
            refuse_links_leaving(folder, "stage folder")
            remove_temporaries(folder)
            return "interrupted", {}
        folder.mkdir(parents=True, exist_ok=True)
        return "new", {}

    def run(
        self,
        kind: str,
        label: str,
        settings: Mapping[str, Any],
        inputs: Mapping[str, str],
        work: Callable[[Path, bool], dict[str, Any] | None],
        *,
        collective: bool = True,
    ) -> StageRecord:
        """Reuse the finished stage with this key, or call ``work(folder, resume)``.

        ``work`` writes its output into ``folder`` and returns a small JSON-ready summary
        (kept in ``stage.json``); ``resume`` is true when it continues an interrupted run.

        Under ``torchrun`` rank 0 decides (reuse, resume or run) for every rank. A
        ``collective`` stage's ``work`` runs on every rank (it joins the process group
        itself: DDP training, label sharding); otherwise it runs on rank 0 only and the
        other ranks receive its summary. Only rank 0 writes ``stage.json``.
        """
        key = stage_key(kind, settings, inputs)
        call = StageCall(kind, label, settings, inputs, key, self.folder(kind, label, key))
        record = self.reuse_or_run(call, work, collective)
        self.records.append(record)
        return record

    def reuse_or_run(
        self, call: StageCall, work: Callable[[Path, bool], dict[str, Any] | None], collective: bool
    ) -> StageRecord:
        """The one step a cache that does not run stages (``doll doctor``'s plan) replaces:
        reuse the finished stage in ``call.folder`` or run ``work`` there, as :meth:`run`
        says."""
        kind, label, key, folder = call.kind, call.label, call.key, call.folder
        settings, inputs = call.settings, call.inputs
        status, saved = from_rank_zero(lambda: self._status(folder))
        if status == "done":
            record = StageRecord(
                kind, label, key, folder, True, float(saved["seconds"]), saved.get("info") or {}
            )
            self.log(f"{kind} {label}: reused {folder.name} (took {record.seconds:.1f} s)")
            return record
        resuming = status == "interrupted"
        self.log(f"{kind} {label}: {'resuming' if resuming else 'running'} in {folder.name}")
        started = time.perf_counter()
        if collective:
            info = work(folder, resuming) or {}
        else:
            info = from_rank_zero(lambda: work(folder, resuming) or {})
        seconds = time.perf_counter() - started
        record = StageRecord(kind, label, key, folder, False, seconds, info)
        if launched_rank() == 0:
            atomic_write_text(
                folder / DONE,
                json.dumps(
                    {
                        "kind": kind,
                        "label": label,
                        "key": key,
                        "doll": __version__,
                        "settings": dict(settings),
                        "inputs": dict(inputs),
                        "seconds": round(seconds, 2),
                        "resumed": resuming,
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "info": info,
                        "files": file_digests(folder),
                    },
                    indent=2,
                    default=str,
                )
                + "\n",
            )
            drop_resume_state(folder)
        self.computed[kind] = self.computed.get(kind, 0) + 1
        self.log(f"{kind} {label}: done in {seconds:.1f} s")
        return record
