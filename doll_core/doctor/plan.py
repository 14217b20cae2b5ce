"""The resume plan: replay a run's ``experiment.json`` without doing any work, and say why
each stage is reused, continued, redone or run new, and which stages a damaged one made."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doll_core.configuration import never_keyed_names
from doll_core.doctor.files import read_json
from doll_core.doctor.findings import Step
from doll_core.doctor.stages import STAGE_NAME, StageState
from doll_core.experiment.stages import DONE, StageCache, StageCall, StageRecord

if TYPE_CHECKING:
    from doll_core.experiment.sections import Experiment


@dataclass
class PlannedStage:
    """A stage the runner asks for, with the key this DoLL computes for it."""

    kind: str
    label: str
    key: str
    name: str
    settings: dict[str, Any]
    inputs: dict[str, str]


#: Placeholder results of stages that have not run, for the runner's bookkeeping.
_BLANK_INFO: dict[str, Any] = {
    "test": {"miou": 0.0, "mdice": 0.0},
    "train_images": 0,
    "curve": [],
    "best_epoch": 0,
}


class _PlanningCache(StageCache):
    """A :class:`StageCache` that records which stages a run asks for and does nothing."""

    planning = True

    def __init__(self, root: Path) -> None:
        super().__init__(root, resume=True)
        self.planned: list[PlannedStage] = []

    def reuse_or_run(
        self, call: StageCall, work: Callable[[Path, bool], dict[str, Any] | None], collective: bool
    ) -> StageRecord:
        """Record the stage and run nothing: what a finished stage's ``stage.json`` says,
        or placeholders."""
        plain = json.loads(json.dumps(dict(call.settings), default=str))
        inputs = {k: str(v) for k, v in call.inputs.items()}
        self.planned.append(
            PlannedStage(call.kind, call.label, call.key, call.folder.name, plain, inputs)
        )
        saved, _ = read_json(call.folder / DONE)
        info = dict(_BLANK_INFO)
        if isinstance(saved, dict) and isinstance(saved.get("info"), dict):
            info.update(saved["info"])
        return StageRecord(call.kind, call.label, call.key, call.folder, True, 0.0, info)


def plan_experiment(
    document: Mapping[str, Any], stages: Path, source: str, device: str | None = None
) -> list[PlannedStage]:
    """The stages ``doll run --resume`` asks for, in order, for the resolved experiment
    ``document`` run on ``device`` (default: the experiment's), with the keys this DoLL
    computes.

    :raises DollError: when the document is no longer a valid experiment.
    """
    from doll_core.experiment.loading import validate_experiment

    experiment = validate_experiment(document, source=source)
    return planned_stages(experiment, stages, device)


def planned_stages(
    experiment: Experiment, stages: Path, device: str | None = None
) -> list[PlannedStage]:
    """:func:`plan_experiment` for an experiment already validated (validation builds its
    models once, which need not happen twice)."""
    from doll_core.experiment.runner import run_stages

    cache = _PlanningCache(stages)
    run_stages(experiment, cache, device=device or experiment.device)
    return cache.planned


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each setting that differs (``(not set)`` when absent); a
    setting that never enters a key, which records of older DoLL versions hold, is left
    out."""

    def show(values: Mapping[str, Any], key: str) -> str:
        return json.dumps(values[key], default=str) if key in values else "(not set)"

    keys = sorted((set(old) | set(new)) - never_keyed_names())
    return [
        f"{k}: {show(old, k)} -> {show(new, k)}"
        for k in keys
        if k not in old
        or k not in new
        or json.dumps(old[k], sort_keys=True, default=str)
        != json.dumps(new[k], sort_keys=True, default=str)
    ]


def why_new(
    stage: PlannedStage, by_prefix: Mapping[str, list[StageState]]
) -> tuple[str, str | None]:
    """Why a planned stage has no folder yet, and the finished folder it replaces
    (``by_prefix``: the stage folders by ``<kind>-<label>``)."""
    label = STAGE_NAME.match(stage.name)
    assert label is not None
    others = by_prefix.get(f"{stage.kind}-{label.group('label')}", [])
    for other in others:
        if other.status != "finished":
            continue
        changes = changed_settings(other.record.get("settings") or {}, stage.settings)
        inputs = [
            k
            for k in sorted(set(other.inputs) | set(stage.inputs))
            if other.inputs.get(k) != stage.inputs.get(k)
        ]
        if changes:
            return "settings changed: " + "; ".join(changes), other.name
        if inputs:
            return "inputs changed: " + ", ".join(inputs), other.name
        return "its key changed (another DoLL version)", other.name
    return "not started yet", None


def step_for(state: StageState) -> Step | None:
    """What ``--resume`` does with a stage folder on disk; ``None``: reuses it (healthy)."""
    if state.recompute is not None and state.resume is not None:
        action, detail = state.resume
        return Step(state.name, action, f"{state.recompute}; {detail}")
    if state.status == "interrupted" and state.resume is not None:
        return Step(state.name, state.resume[0], state.resume[1])
    if state.damaged:
        return Step(
            state.name,
            "reuse damaged",
            f"finished, so it is reused as it is; delete {DONE} to have it redone",
        )
    return None


def made_from_damaged(
    states: Mapping[str, StageState], planned: Iterable[PlannedStage]
) -> dict[str, list[str]]:
    """Damaged stage -> the stage folders made from it (transitively, by the input keys
    their ``stage.json`` records, or the plan gives them), in plan order; only the damaged
    stages something was made from."""
    planned = list(planned)
    inputs: dict[str, set[str]] = {}
    for stage in planned:
        inputs.setdefault(stage.name, set()).update(stage.inputs.values())
    for state in states.values():
        inputs.setdefault(state.name, set()).update(state.inputs.values())
    keys = {name: STAGE_NAME.match(name).group("key") for name in inputs}  # type: ignore[union-attr]
    order = list(dict.fromkeys([*(stage.name for stage in planned), *states]))
    damaged = {state.key: state.name for state in states.values() if state.damaged}
    dependents: dict[str, list[str]] = {}
    for key, damaged_name in damaged.items():
        found: list[str] = []
        frontier = {key}
        while frontier:
            step = sorted(
                name
                for name, needs in inputs.items()
                if needs & frontier and name not in found and name != damaged_name
            )
            found.extend(step)
            frontier = {keys[name] for name in step}
        made = sorted((name for name in found if name in states), key=order.index)
        if made:
            dependents[damaged_name] = made
    return dependents


def note_damaged_reads(
    plan: Iterable[Step], states: Mapping[str, StageState], planned: Iterable[PlannedStage]
) -> None:
    """Add to each step that computes a stage which reads a damaged stage ``--resume``
    reuses as it is that it may fail (a damaged stage recomputed first does no harm)."""
    reused = {s.key: s.name for s in states.values() if s.damaged and s.recompute is None}
    reads = {stage.name: set(stage.inputs.values()) for stage in planned}
    for entry in plan:
        if entry.action in ("continue", "redo", "run"):
            needs = reads.get(entry.stage, set())
            broken = sorted(reused[k] for k in needs if k in reused)
            if broken:
                entry.detail += f"; it reads damaged {', '.join(broken)} and may fail"
