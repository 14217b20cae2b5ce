"""What ``doll evaluate RUN`` reads from a run folder of ``doll run``: its classifiers'
checkpoints, its phantom and its explainer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doll_core.errors import DollError
from doll_core.relocation import located

#: the checkpoint of a classifier stage that evaluation explains
BEST_CHECKPOINT = "best.pt"


@dataclass
class RunInputs:
    """A run's classifiers (name -> checkpoint), phantom root (or ``None``) and explainer
    with its parameters."""

    classifiers: dict[str, Path]
    phantom: Path | None
    explainer: str | None
    #: explainer name -> its parameters in the experiment (the run's explainer's merged
    #: with ``explainer_params``, as label generation merges them)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


def _located(recorded: str, run: Path) -> Path:
    """``recorded`` (relative to ``run``, or absolute) if it exists, else the same folder
    name under ``run/stages`` (an absolute record of a run folder that was moved or
    copied before DoLL recorded relative paths)."""
    path = located(recorded, run)
    if path.exists():
        return path
    moved = run / "stages" / Path(recorded).name
    return moved if moved.exists() else path


def read_run(run: Path) -> RunInputs:
    """The inputs of ``run``'s evaluation, from its ``results.json`` and ``experiment.json``.

    :raises DollError: when the folder is not a finished run, or names no classifier.
    """
    results_path, experiment_path = run / "results.json", run / "experiment.json"
    for path in (results_path, experiment_path):
        if not path.is_file():
            raise DollError(f"{run} is not a finished run folder of doll run: no {path.name}")
    try:
        results = json.loads(results_path.read_text())
        experiment = json.loads(experiment_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DollError(f"cannot read the records of {run}: {exc}") from None
    classifiers: dict[str, Path] = {}
    for stage in results.get("stages", []):
        if stage.get("kind") == "classifier" and stage.get("label"):
            checkpoint = _located(str(stage["folder"]), run) / BEST_CHECKPOINT
            classifiers.setdefault(str(stage["label"]), checkpoint)
    if not classifiers:
        raise DollError(f"{run} trained no classifier: nothing to evaluate")
    phantom = None
    if results.get("phantom"):
        recorded = Path(results["phantom"])
        phantom = _located(str(recorded.parent), run) / recorded.name
    explanation = experiment.get("explanation") or {}
    explainer = explanation.get("explainer")
    params = {str(k): dict(v) for k, v in (explanation.get("params") or {}).items()}
    if explainer:
        own = dict(explanation.get("explainer_params") or {})
        params[explainer] = own | params.get(explainer, {})
    return RunInputs(classifiers, phantom, explainer, params)
