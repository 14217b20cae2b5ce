"""What ``doll plan`` shows before a long run: an experiment's resolved settings, each with
the help text its settings field declares, and the stages ``doll run`` would compute or
reuse in a run folder, without running anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from doll_core.configuration import declared_fields
from doll_core.doctor.plan import planned_stages
from doll_core.experiment.sections import Experiment
from doll_core.experiment.stages import DONE


@dataclass(frozen=True)
class Setting:
    """One resolved setting: its dotted key, value (JSON text) and help text (``""`` where
    its field declares none)."""

    key: str
    value: str
    help: str


def _holds_settings(annotation: Any) -> bool:
    """Whether a field's type is a dict of settings models (``classifiers``, ``tasks``)."""
    args = get_args(annotation)
    return get_origin(annotation) is dict and len(args) == 2 and bool(declared_fields(args[1]))


def _settings(model: Any, prefix: str = "") -> Iterator[Setting]:
    for name, field in declared_fields(type(model)).items():
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if declared_fields(type(value)):  # a settings model, or the engine's options
            yield from _settings(value, key + ".")
        elif _holds_settings(field.annotation) and isinstance(value, dict):
            for item, entry in value.items():
                yield from _settings(entry, f"{key}.{item}.")
        else:
            text = json.dumps(value, default=str, sort_keys=True)
            yield Setting(key, text, field.description or "")


def resolved_settings(experiment: Experiment) -> list[Setting]:
    """Every setting of ``experiment`` after defaults and ``[training]`` are applied, in
    the order the models declare them."""
    return list(_settings(experiment))


@dataclass(frozen=True)
class PlannedStep:
    """A stage ``doll run`` asks for: its folder name and whether a finished folder of
    that name is already in the stage folder (``reuse``) or it would be computed
    (``run``)."""

    name: str
    action: str


def stage_plan(
    experiment: Experiment, stages: Path, device: str | None = None
) -> list[PlannedStep]:
    """The stages of ``experiment`` in the order ``doll run`` computes them, each reused
    when ``stages`` holds its finished folder (a folder's files are checked by the run
    itself, and by ``doll doctor``)."""
    planned = planned_stages(experiment, stages, device)
    return [
        PlannedStep(stage.name, "reuse" if (stages / stage.name / DONE).is_file() else "run")
        for stage in planned
    ]
