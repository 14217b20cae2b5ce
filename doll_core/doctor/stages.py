"""Checking stage folders (``STAGES/<kind>-<label>-<key>``): finished or interrupted, the
files ``stage.json`` recorded, each kind's outputs, and what ``--resume`` does with each."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doll_core.digests import sha256_of
from doll_core.doctor.files import LEFTOVER, TEMPORARY, check_torch_file, read_json
from doll_core.doctor.findings import Action, Finding, Severity
from doll_core.doctor.store import check_label_store
from doll_core.experiment.stages import DONE, RESUME_ONLY
from doll_core.labels.store import CONFIG

#: ``<kind>-<label>-<key>``: how :class:`StageCache` names a stage folder.
STAGE_NAME = re.compile(r"^(?P<kind>[a-z]+)-(?P<label>.+)-(?P<key>[0-9a-f]{16})$")

#: Files (relative to the stage folder) each stage kind leaves for later stages and the
#: report; a finished stage without one of them is damaged.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "phantom": ("phantom/PHANTOM.json",),
    "classifier": ("best.pt", "last.pt", "metrics.json", "config.json"),
    "explain": ("labels",),
    "labels": ("labels",),
    "pretrain": ("best.pt", "last.pt", "metrics.json", "config.json"),
    "finetune": ("best.pt", "test.json", "metrics.json", "config.json"),
    "evaluate": ("evaluation.json", "evaluation.md", "evaluation.csv"),
}
#: Stage kinds that write a label store in ``labels/``.
STORE_KINDS = frozenset({"explain", "labels"})
#: Stage kinds that train (and so resume from ``state.pt``).
TRAINING_KINDS = frozenset({"classifier", "pretrain", "finetune"})


@dataclass
class StageState:
    """One stage folder on disk, as doctor found it."""

    name: str
    kind: str
    label: str
    key: str
    folder: Path
    #: ``finished`` (valid ``stage.json``), ``interrupted`` (none) or ``unreadable``.
    status: str
    record: dict[str, Any] = field(default_factory=dict)
    damaged: bool = False
    #: For an interrupted stage, or a finished one that resume recomputes: what it does.
    resume: tuple[Action, str] | None = None
    #: Why ``doll run`` will not reuse this finished stage (a file no longer matches the
    #: SHA-256 its ``stage.json`` recorded, or ``stage.json`` is unreadable).
    recompute: str | None = None

    @property
    def inputs(self) -> dict[str, str]:
        inputs = self.record.get("inputs")
        return {str(k): str(v) for k, v in inputs.items()} if isinstance(inputs, dict) else {}


def stage_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and STAGE_NAME.match(p.name))


#: ``add(severity, path, message)``: one finding about a stage folder
Add = Callable[[Severity, Path, str], None]


def check_stage(folder: Path, name: Callable[[Path], str]) -> tuple[StageState, list[Finding]]:
    """Check one stage folder: its ``stage.json``, outputs, checkpoints and JSON files."""
    match = STAGE_NAME.match(folder.name)
    assert match is not None
    kind, label, key = match.group("kind"), match.group("label"), match.group("key")
    findings: list[Finding] = []

    def add(severity: Severity, path: Path, message: str) -> None:
        findings.append(Finding(severity, name(path), message, folder.name))

    state = StageState(folder.name, kind, label, key, folder, "interrupted")
    if (folder / DONE).exists():
        _read_record(state, add)
    if state.status == "interrupted":
        action, detail, extra = _interrupted(state, name)
        state.resume = (action, detail)
        findings.extend(extra)
        add("warning", folder, f"interrupted (no {DONE}): --resume would {action} it: {detail}")
    elif state.recompute is not None:  # resume deletes stage.json, then goes on as above
        action, detail, _ = _interrupted(state, name)
        state.resume = (action, detail)
    if state.status == "finished":
        _check_outputs(state, add)
    _check_files(state, add)
    if state.status == "finished":
        findings.extend(_check_kind_outputs(state, name, add))
        _verdict(state, add)
    return state, findings


def _read_record(state: StageState, add: Add) -> None:
    """Read ``stage.json``: finished or unreadable, and every file it recorded intact?"""
    done, folder = state.folder / DONE, state.folder
    record, why = read_json(done)
    if not isinstance(record, dict) or why is not None:
        state.status = "unreadable"
        state.damaged = True
        state.recompute = f"its {DONE} is unreadable"
        add(
            "problem",
            done,
            f"{why or 'is not a JSON object'}: doll run refuses this stage, and "
            "--resume recomputes it",
        )
        return
    state.status = "finished"
    state.record = record
    if record.get("key") != state.key or record.get("kind") != state.kind:
        state.damaged = True
        add(
            "problem",
            done,
            f"records stage {record.get('kind')}/{record.get('key')}, but the folder "
            f"is {state.kind}/{state.key}: copied from another stage?",
        )
    recorded = record.get("files")
    for file, digest in sorted(recorded.items() if isinstance(recorded, dict) else []):
        path = folder / str(file)
        if not path.is_file():
            why = f"{file} is missing"
            add("problem", path, f"missing ({DONE} recorded its SHA-256)")
        elif sha256_of(path) != digest:
            why = f"{file} no longer matches its SHA-256 in {DONE}"
            add(
                "problem",
                path,
                f"does not match the SHA-256 in {DONE} (changed or "
                "corrupted since the stage finished)",
            )
        else:
            continue
        state.damaged = True
        state.recompute = state.recompute or why


def _check_outputs(state: StageState, add: Add) -> None:
    """The outputs a finished stage of its kind leaves for later stages, and no resume
    state left behind."""
    for relative in OUTPUTS.get(state.kind, ()):
        if not (state.folder / relative).exists():
            state.damaged = True
            add("problem", state.folder / relative, "missing output of a finished stage")
    for leftover in RESUME_ONLY:  # what drop_resume_state deletes when a stage finishes
        if (state.folder / leftover).exists():
            add(
                "warning",
                state.folder / leftover,
                "resume state left by a finished stage (killed while cleaning up); safe to delete",
            )


def _check_files(state: StageState, add: Add) -> None:
    """Every checkpoint and JSON file at the top of the folder (stores: see
    :func:`_check_kind_outputs`)."""
    finished = state.status == "finished"
    redo = state.resume is not None and state.resume[0] == "redo"
    for path in sorted(state.folder.iterdir()):
        if TEMPORARY.match(path.name):
            add("warning", path, LEFTOVER)
            continue
        if path.suffix == ".pt" and path.is_file():
            if path.name == "state.pt" and not finished:
                continue  # checked by _interrupted
            _, why = check_torch_file(path)
        elif path.suffix == ".json" and path.is_file() and path.name != DONE:
            _, why = read_json(path)
        else:
            continue
        if why is not None:
            state.damaged = state.damaged or finished
            add("warning" if redo else "problem", path, why)


def _check_kind_outputs(state: StageState, name: Callable[[Path], str], add: Add) -> list[Finding]:
    """A finished phantom's ``PHANTOM.json``, a finished store stage's label store."""
    folder = state.folder
    phantom_json = folder / "phantom" / "PHANTOM.json"
    if state.kind == "phantom" and phantom_json.exists():
        _, why = read_json(phantom_json)
        if why is not None:
            state.damaged = True
            add("problem", phantom_json, why)
    if state.kind in STORE_KINDS and (folder / "labels").is_dir():
        store = check_label_store(folder / "labels", name=name, finished=True, stage=folder.name)
        if any(f.severity == "problem" for f in store.findings):
            state.damaged = True
        return store.findings
    return []


def _verdict(state: StageState, add: Add) -> None:
    """The one line that says what becomes of a finished stage."""
    done = state.folder / DONE
    if not state.damaged:
        version = state.record.get("doll")
        add("ok", state.folder, f"finished ({state.kind} {state.label}; DoLL {version})")
    elif state.recompute is not None:
        add(
            "problem",
            done,
            f"{state.recompute}: doll run refuses this stage, and --resume recomputes it",
        )
    else:
        add(
            "problem",
            done,
            "this stage is marked finished, so --resume reuses it as it is; delete "
            f"{DONE} to have --resume redo it",
        )


def _interrupted(
    state: StageState, name: Callable[[Path], str]
) -> tuple[Action, str, list[Finding]]:
    """What ``--resume`` does with an interrupted stage (mirrors each kind's resume)."""
    folder, kind = state.folder, state.kind
    findings: list[Finding] = []
    if kind in TRAINING_KINDS:
        path = folder / "state.pt"
        if not path.exists():
            return "redo", "no state.pt yet: training starts from epoch 0", findings
        payload, why = check_torch_file(path)
        if why is not None or not isinstance(payload, dict):
            findings.append(
                Finding(
                    "problem",
                    name(path),
                    f"{why or 'is not a training state'}: --resume stops with an error; "
                    "delete it to restart this stage from epoch 0",
                    state.name,
                )
            )
            return "fails", "its state.pt does not load", findings
        epochs = (payload.get("config") or {}).get("epochs")
        of = f" of {epochs}" if epochs is not None else ""
        return "continue", f"from state.pt after epoch {payload.get('epoch')}{of}", findings
    if kind in STORE_KINDS:
        store = folder / "labels"
        if not (store / CONFIG).is_file():
            return "redo", "no label store yet", findings
        check = check_label_store(store, name=name, finished=False, stage=state.name)
        findings.extend(f for f in check.findings if f.severity != "ok")
        if not check.readable:
            return "redo", "its label store config is unreadable", findings
        if check.fused:
            return "redo", f"a fused store is rewritten whole ({check.total} shards)", findings
        kept = (check.total or 0) - len(check.regenerate)
        made = ", ".join(f"{f} ({why})" for f, why in check.regenerate) or "none"
        return "continue", f"keeps {kept} of {check.total} shards, makes {made}", findings
    if kind == "phantom":
        return "redo", "the phantom is written again from the start", findings
    return "continue", f"stage kind {kind!r}: its own resume decides", findings
