"""``doll doctor``'s orchestration: tell what kind of folder a path is, run the checks that
fit it and assemble the report with its resume plan (:func:`diagnose`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from doll_core._version import __version__
from doll_core.doctor.files import LEFTOVER, TEMPORARY, VERSION_KEYS, current_versions, read_json
from doll_core.doctor.findings import DoctorReport, Finding, Severity, Step
from doll_core.doctor.plan import (
    PlannedStage,
    made_from_damaged,
    note_damaged_reads,
    plan_experiment,
    step_for,
    why_new,
)
from doll_core.doctor.stages import STAGE_NAME, StageState, check_stage, stage_folders
from doll_core.doctor.store import check_label_store, is_label_store
from doll_core.errors import DollError
from doll_core.experiment.stages import DONE, recorded_device
from doll_core.links import links_leaving
from doll_core.relocation import located


class _Doctor:
    """One report being assembled; paths in findings are named relative to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.report = DoctorReport(path, "")

    def name(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.path)) or "."
        except ValueError:
            return str(path)

    def add(self, severity: Severity, path: Path, message: str, stage: str | None = None) -> None:
        self.report.findings.append(Finding(severity, self.name(path), message, stage))

    # -- kinds of folders ------------------------------------------------------------------

    def label_store(self) -> None:
        self.report.kind = "label store"
        check = check_label_store(self.path, name=self.name)
        self.report.findings.extend(check.findings)
        self.report.planned_from = "label store"
        if check.readable and check.regenerate and not check.fused:
            self.report.plan = [
                Step(file, "redo", f"{why}: doll labels generate --resume makes it again")
                for file, why in check.regenerate
            ]
        elif check.readable and check.fused and any(f.severity != "ok" for f in check.findings):
            self.report.plan = [
                Step(self.name(self.path), "redo", "a fused store is rewritten whole")
            ]

    def run_folders(self, runs: list[Path], stages: Path | None) -> None:
        states = self.stages(stages) if stages is not None else {}
        self.stage_versions(states)
        planned: list[PlannedStage] = []
        plan_ok = True
        for run in runs:
            self.versions(run)
            if not (run / "results.json").is_file():
                self.add(
                    "warning",
                    run,
                    "no results.json: the run has not finished; doll run --resume finishes it",
                )
            document_path = run / "experiment.json"
            document, why = read_json(document_path)
            if not isinstance(document, dict):
                self.add(
                    "problem",
                    document_path,
                    f"{why or 'is not a JSON object'}: cannot tell what --resume would run",
                )
                plan_ok = False
                continue
            if stages is None:
                continue
            try:
                planned.extend(
                    plan_experiment(
                        document, stages, self.name(document_path), recorded_device(run)
                    )
                )
            except DollError as exc:
                plan_ok = False
                self.add(
                    "problem",
                    document_path,
                    f"not a valid experiment for this DoLL ({__version__}): {exc}",
                )
            except Exception as exc:  # the plan is a bonus: report, fall back to the folders
                plan_ok = False
                self.add(
                    "warning",
                    document_path,
                    f"could not replay it ({type(exc).__name__}: {exc}); the plan below "
                    "covers the stage folders on disk only",
                )
        if stages is None:
            return
        if plan_ok and planned:
            self.report.planned_from = "experiment.json"
            self.plan_from(planned, states)
        else:
            self.plan_static(states)
        self.find_dependents(states, planned)

    def stages(self, root: Path) -> dict[str, StageState]:
        states: dict[str, StageState] = {}
        for folder in stage_folders(root):
            state, findings = check_stage(folder, self.name)
            self.report.findings.extend(findings)
            states[folder.name] = state
        for path in sorted(root.iterdir()):
            if TEMPORARY.match(path.name):
                self.add("warning", path, LEFTOVER)
        return states

    def versions(self, run: Path) -> None:
        """The versions ``results.json`` recorded against the installed ones."""
        results_path = run / "results.json"
        if results_path.exists():
            results, why = read_json(results_path)
            if not isinstance(results, dict):
                self.add("problem", results_path, why or "is not a JSON object")
            else:
                recorded = results.get("environment") or {}
                now = current_versions()
                changed = [
                    f"{k} {recorded[k]} (now {now.get(k, 'not installed')})"
                    for k in VERSION_KEYS
                    if k in recorded and str(recorded[k]) != now.get(k)
                ]
                if changed:
                    self.add(
                        "warning",
                        results_path,
                        "made with " + ", ".join(changed) + ": stages computed again may "
                        "differ slightly from the recorded results",
                    )

    def stage_versions(self, states: Mapping[str, StageState]) -> None:
        """The DoLL versions that finished the stages, against this one."""
        by_version: dict[str, list[str]] = {}
        for state in states.values():
            version = state.record.get("doll")
            if state.status == "finished" and version != __version__:
                by_version.setdefault(str(version), []).append(state.name)
        for version, names in sorted(by_version.items()):
            self.add(
                "warning",
                states[names[0]].folder / DONE,
                f"{len(names)} stage(s) finished by DoLL {version}, this is {__version__} "
                f"({', '.join(names)}); they are reused while their keys match",
            )

    # -- the plan ------------------------------------------------------------------------------

    def plan_from(self, planned: list[PlannedStage], states: dict[str, StageState]) -> None:
        seen: set[str] = set()
        replaced_by: dict[str, tuple[str, str]] = {}
        by_prefix: dict[str, list[StageState]] = {}
        for state in states.values():
            by_prefix.setdefault(f"{state.kind}-{state.label}", []).append(state)
        for stage in planned:
            if stage.name in seen:
                continue
            seen.add(stage.name)
            existing = states.get(stage.name)
            if existing is None:
                why, replaced = why_new(stage, by_prefix)
                detail = why if replaced is None else f"{why} (was {replaced})"
                self.report.plan.append(Step(stage.name, "run", detail))
                if replaced is not None:
                    replaced_by[replaced] = (stage.name, why)
            elif (step := step_for(existing)) is not None:
                self.report.plan.append(step)
        for name, state in states.items():
            if name in replaced_by:
                new_name, why = replaced_by[name]
                self.add(
                    "warning",
                    state.folder,
                    f"config/version mismatch, {why}: --resume runs this stage again in {new_name}",
                    name,
                )
            elif name not in seen:
                self.add(
                    "ok" if state.status == "finished" else "warning",
                    state.folder,
                    "not used by this experiment now (other settings, or another run "
                    "sharing the stages folder); --resume leaves it alone",
                    name,
                )

    def plan_static(self, states: dict[str, StageState]) -> None:
        for state in states.values():
            if (step := step_for(state)) is not None:
                self.report.plan.append(step)

    def find_dependents(
        self, states: Mapping[str, StageState], planned: Iterable[PlannedStage]
    ) -> None:
        """For each damaged stage, the stage folders made from it, and a note on every
        step of the plan that reads it directly."""
        planned = list(planned)
        for damaged_name, made in made_from_damaged(states, planned).items():
            self.report.dependents[damaged_name] = made
            self.add(
                "warning",
                states[damaged_name].folder,
                f"{len(made)} stage(s) were made from this damaged stage: "
                + ", ".join(made)
                + " (the finished ones are reused as they are unless you delete them too)",
                damaged_name,
            )
        note_damaged_reads(self.report.plan, states, planned)


def diagnose(path: str | Path) -> DoctorReport:
    """Check a run folder, an ablation folder, a stages folder, one stage folder or a
    label store.

    :raises DollError: when ``path`` is missing or is none of those.
    """
    path = Path(path)
    if not path.exists():
        raise DollError(f"{path} does not exist")
    if not path.is_dir():
        raise DollError(
            f"{path} is a file; give a run folder, an ablation folder, a stages folder or a "
            "label store"
        )
    doctor = _Doctor(path)
    report = doctor.report
    if is_label_store(path):
        doctor.label_store()
    elif (path / "ablation.json").is_file() or (path / "points").is_dir():
        report.kind = "ablation"
        points = path / "points"
        runs = sorted(p for p in points.iterdir() if p.is_dir()) if points.is_dir() else []
        shared = path / "stages"
        doctor.run_folders(runs, shared if shared.is_dir() else None)
    elif any((path / n).exists() for n in ("experiment.json", "results.json", "stages")):
        report.kind = "run"
        stages = _stages_root(path)
        if stages is None:
            doctor.add("problem", path / "stages", "no stages folder: nothing to check")
        doctor.run_folders([path], stages)
    elif stage_folders(path):
        report.kind = "stages"
        states = doctor.stages(path)
        doctor.stage_versions(states)
        doctor.plan_static(states)
        doctor.find_dependents(states, [])
    elif STAGE_NAME.match(path.name):
        report.kind = "stage"
        state, findings = check_stage(path, doctor.name)
        report.findings.extend(findings)
        doctor.stage_versions({state.name: state})
        doctor.plan_static({state.name: state})
    else:
        raise DollError(
            f"{path} is not a run folder (experiment.json, stages/), an ablation folder, a "
            "stages folder, a stage folder or a label store (config.json with manifest.json "
            "or shards)"
        )
    for link in links_leaving(path):
        doctor.add(
            "problem",
            link,
            f"a symbolic link leading outside the folder (to {os.readlink(link)}): DoLL "
            "refuses to write here until it is removed",
        )
    return report


def _stages_root(run: Path) -> Path | None:
    """``run/stages``, or the folder ``results.json`` says the stages were in."""
    if (run / "stages").is_dir():
        return run / "stages"
    results, _ = read_json(run / "results.json")
    if isinstance(results, dict):
        for record in results.get("stages") or []:
            folder = (
                located(str(record["folder"]), run)
                if isinstance(record, dict) and record.get("folder")
                else None
            )
            if folder is not None and folder.parent.is_dir():
                return folder.parent
    return None
