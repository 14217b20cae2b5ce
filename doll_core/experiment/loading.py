"""Reading an experiment file and checking everything that can be checked before work
starts: TOML, ``--set`` overrides, paths relative to the file, every section's settings
and plugins, and what one section asks of another; each problem named by its key."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from doll_core.checkpoint import backbone_encoder
from doll_core.configuration import error_items, plugin_problems
from doll_core.errors import DollError
from doll_core.experiment.config import (
    DataSources,
    segmentation_encoder,
    stage_configs,
)
from doll_core.experiment.overrides import apply_overrides
from doll_core.experiment.sections import RUNNER_INPUTS, Experiment
from doll_core.home import expand_home
from doll_core.registry import Registry, get_registry


def read_experiment_file(path: str | Path) -> dict[str, Any]:
    """The raw TOML document of an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise DollError(f"experiment file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DollError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise DollError(f"{path}: not a UTF-8 text file") from None


def resolve_relative_paths(document: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative data paths are relative to the experiment file's folder; ``~`` and
    ``~user`` are expanded.

    :raises DollError: naming the key whose ``~user`` names no user here.
    """

    def resolve(table: Any, key: str, where: str) -> None:
        if isinstance(table, dict) and isinstance(table.get(key), str):
            table[key] = str(base / expand_home(table[key], where))

    data = document.get("data")
    if isinstance(data, dict):
        resolve(data.get("classification"), "root", "data.classification.root")
        tasks = data.get("tasks")
        for name, task in tasks.items() if isinstance(tasks, dict) else ():
            for key in ("root", "split_file", "patient_file"):
                resolve(task, key, f"data.tasks.{name}.{key}")
    resolve(document.get("finetune"), "checkpoint", "finetune.checkpoint")
    return document


def _non_finite_numbers(node: Mapping[str, Any] | list[Any], prefix: str = "") -> list[str]:
    """``KEY: nan is not a finite number`` for every nan or inf in a document (no setting
    of any stage or plugin takes one; a learning rate of inf would train on garbage)."""
    problems = []
    items = node.items() if isinstance(node, Mapping) else enumerate(node)
    for key, value in items:
        where = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: {value} is not a finite number")
        elif isinstance(value, Mapping | list):
            problems += _non_finite_numbers(value, where)
    return problems


def _is_runner_key(loc: tuple[Any, ...]) -> bool:
    """Is ``loc`` a key of a stage section that the runner fills in (``[classifiers.NAME]``
    counts as ``[training]``)?"""
    if loc[:1] == ("classifiers",):
        loc = ("training", *loc[2:])
    inputs = RUNNER_INPUTS.get(str(loc[0])) if len(loc) == 2 else None
    return inputs is not None and str(loc[1]) in inputs.runner_keys()


def _structure_problems(error: ValidationError, document: Mapping[str, Any]) -> list[str]:
    """One ``dotted.key: message`` per problem, a classifier's key that came from
    ``[training]`` named there (once, not once per classifier), and a stage's input key
    (:data:`RUNNER_INPUTS`) written in its section said to be the runner's."""
    found = document.get("training")
    training: dict[str, Any] = found if isinstance(found, dict) else {}
    classifiers = document.get("classifiers")
    lines = []
    for loc, message in error_items(error):
        if loc[:1] == ("classifiers",) and len(loc) >= 2 and isinstance(classifiers, dict):
            entry = classifiers.get(loc[1])
            own: dict[str, Any] = entry if isinstance(entry, dict) else {}
            keys = (
                [str(loc[2])]
                if len(loc) > 2
                else [k for k in {**training, **own} if re.search(rf"\b{re.escape(k)}\b", message)]
            )
            if keys and keys[0] in training and keys[0] not in own:
                loc = ("training", *loc[2:])
        if message == "unknown key" and _is_runner_key(loc):
            message = "set by the runner from other sections; remove it"
        line = f"{'.'.join(str(part) for part in loc) or '(top level)'}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def _cross_section_problems(experiment: Experiment, registry: Registry) -> list[str]:
    """What no one section can check: names of classifiers and tasks, the encoder the
    classifiers hand on, every stage configuration built with stand-in paths, and every
    model built once (:func:`~doll_core.experiment.preflight.model_problems`)."""
    problems = []
    have = ", ".join(experiment.classifiers)
    for name in experiment.explained_classifiers():
        if name not in experiment.classifiers:
            problems.append(f"explanation.classifiers: no classifier named {name!r} (have: {have})")
    encoder_from, grid = experiment.pretrain.encoder_from, experiment.finetune
    if encoder_from is None and experiment.pretrain.encoder is None:
        problems.append("pretrain: give encoder_from = CLASSIFIER or encoder = NAME")
    elif encoder_from is not None:
        problems += _encoder_problems(experiment, registry, encoder_from, "pretrain.encoder_from")
    for task in experiment.finetune_tasks():
        if task not in experiment.data.tasks:
            tasks = ", ".join(experiment.data.tasks) or "none"
            problems.append(
                f"finetune.tasks: no task named {task!r} in [data.tasks] (have: {tasks})"
            )
    if not experiment.finetune_tasks() and grid.inits:
        problems.append("finetune: no downstream task; add [data.tasks.NAME]")
    if "classifier" in grid.inits:
        if (chosen := experiment.init_classifier()) is None:
            problems.append(
                "finetune.classifier: init 'classifier' needs a classifier "
                "(finetune.classifier or pretrain.encoder_from)"
            )
        else:
            problems += _encoder_problems(experiment, registry, chosen, "finetune.classifier")
    problems += _evaluation_problems(experiment, registry)
    if problems:
        return problems
    try:
        configs = stage_configs(experiment, DataSources.placeholder(experiment), registry=registry)
    except DollError as exc:
        return [str(exc)]
    heads = {config.head: config.head_params for config in configs.finetune.values()}
    for head, params in heads.items():  # the pre-trained model's, unless finetune says
        found = plugin_problems(
            registry, "seg_head", head, "finetune.head", params, "finetune.head_params"
        )
        problems += [f"{key}: {text}" for key, text in found]
    if problems:
        return problems
    from doll_core.experiment.preflight import model_problems

    encoder = segmentation_encoder(experiment, registry)
    return model_problems(experiment, configs, registry, encoder=encoder)


def _evaluation_problems(experiment: Experiment, registry: Registry) -> list[str]:
    """``[evaluation]``: metric names and parameters, and ground truth to score against."""
    settings = experiment.evaluation
    if not settings.metrics:
        return [] if not settings.params else ["evaluation.params: no evaluation.metrics named"]
    if experiment.data.phantom is None:
        return ["evaluation: explanation metrics need the phantom's lesion masks ([data.phantom])"]
    from doll_core.evaluation.engine import build_metrics

    try:
        build_metrics(settings.metrics, settings.params, registry)
    except DollError as exc:
        return [f"evaluation: {exc}"]
    return []


def _encoder_problems(
    experiment: Experiment, registry: Registry, name: str, where: str
) -> list[str]:
    """Classifier ``name`` exists and its backbone can start a segmentation encoder."""
    if name not in experiment.classifiers:
        return [
            f"{where}: no classifier named {name!r} (have: {', '.join(experiment.classifiers)})"
        ]
    settings = experiment.classifiers[name]
    try:
        encoder = backbone_encoder(settings.backbone, settings.backbone_params, registry)
    except DollError:  # an unknown backbone or bad parameters: reported under its settings
        return []
    if encoder is None:
        return [
            f"{where} (classifiers.{name}): backbone {settings.backbone!r} has no "
            "segmentation-encoder counterpart, so its weights cannot start a segmentation model"
        ]
    return []


def validate_experiment(
    document: Mapping[str, Any], *, source: str = "experiment", registry: Registry | None = None
) -> Experiment:
    """Check everything that can be checked before work starts and return the experiment.

    :raises DollError: listing every problem, one per line, each naming its key.
    """
    heading = f"invalid experiment {source}:"
    not_finite = _non_finite_numbers(document)
    if not_finite:  # nan and inf are valid TOML, and pydantic takes them for any float
        raise DollError("\n  ".join([heading, *not_finite]))
    registry = registry or get_registry()
    try:
        experiment = Experiment.model_validate(dict(document), context={"registry": registry})
    except ValidationError as exc:
        problems = _structure_problems(exc, document)
    else:
        problems = _cross_section_problems(experiment, registry)
    if problems:
        raise DollError("\n  ".join([heading, *problems]))
    return experiment


def load_experiment(
    path: str | Path, overrides: list[str] | None = None, *, registry: Registry | None = None
) -> tuple[Experiment, dict[str, Any]]:
    """Read, override (``KEY=VALUE`` dotted paths) and validate an experiment file.

    :returns: the experiment and its resolved document (what the run folder records).
    """
    path = Path(path)
    document = apply_overrides(read_experiment_file(path), overrides or [])
    document = resolve_relative_paths(document, path.resolve().parent)
    experiment = validate_experiment(document, source=str(path), registry=registry)
    return experiment, experiment.document()
