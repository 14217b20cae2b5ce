"""Build every model an experiment will build, once, before any stage starts.

A plugin's factory checks the names and types of its parameters; some problems show only
when the model is built (a U-Net's ``decoder_channels`` that do not match its encoder's
depth, a backbone's local ``weights`` file that does not fit it, a fine-tuning
``checkpoint`` that fits too little of the model). Built here with random weights, on
CPU, they are found in seconds instead of after hours of classifier training and
explanation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.registry import Registry, exception_summary
from doll_core.segmentation.models import check_user_weights, probe_segmenter

if TYPE_CHECKING:
    from doll_core.experiment.config import StageConfigs
    from doll_core.experiment.sections import Experiment


def _summary(exc: Exception) -> str:
    """One line: a DoLL error's message, else :func:`~doll_core.registry.exception_summary`."""
    return str(exc) if isinstance(exc, DollError) else exception_summary(exc)


def _given(params: dict[str, Any]) -> str:
    """`` with NAME = VALUE, ...`` for the parameters a user gave, or nothing."""
    return " with " + ", ".join(f"{k} = {v!r}" for k, v in params.items()) if params else ""


#: what a build gave, by what it was built from (:func:`_build_key`): a validation that
#: runs again (an ablation's grid points, ``doll run`` after ``doll plan``) builds nothing
#: twice in a process
_VERDICTS: dict[str, str | None] = {}


def _build_key(registry: Registry, kind: str, name: str, *parts: Any) -> str:
    """What a build's outcome depends on: the plugin's factory, the parameters, and the
    size and time of every file a parameter names (a weights file replaced is read again)."""
    factory = id(registry.get(kind, name).factory)
    files = [
        (str(v), os.stat(v).st_size, os.stat(v).st_mtime_ns)
        for part in parts
        if isinstance(part, dict)
        for v in part.values()
        if isinstance(v, str | Path) and os.path.isfile(v)
    ]
    return json.dumps([kind, name, factory, parts, files], sort_keys=True, default=str)


def _classifier_problems(experiment: Experiment, registry: Registry) -> list[str]:
    """Each classifier's backbone, built for the 14 observations (with its local weights,
    where it names a file)."""
    problems = []
    for name, settings in experiment.classifiers.items():
        params = settings.backbone_params
        built = _build_key(registry, "backbone", settings.backbone, params, settings.in_channels)
        if built not in _VERDICTS:
            try:
                backbone = registry.create("backbone", settings.backbone, **params)
                backbone.build(num_classes=len(OBSERVATIONS), in_channels=settings.in_channels)
                _VERDICTS[built] = None
            except Exception as exc:
                _VERDICTS[built] = (f"backbone {settings.backbone!r}{_given(params)} cannot "
                                    f"build its model: {_summary(exc)}")  # fmt: skip
        if (verdict := _VERDICTS[built]) is not None:
            problems.append(f"classifiers.{name}.backbone{'_params' if params else ''}: {verdict}")
    return problems


def _segmenter_problem(
    section: str,
    head: str,
    head_params: dict[str, Any],
    encoder: str,
    in_channels: int,
    registry: Registry,
    *,
    need_model: bool = False,
) -> tuple[str | None, Any]:
    """``(problem, model)``: the segmentation model built for one class, or why not
    (``model`` is ``None`` too when an earlier build of this architecture passed and
    ``need_model`` is false)."""
    built = _build_key(registry, "seg_head", head, head_params, encoder, in_channels)
    key = f"{section}.head_params" if head_params else f"{section}.head"
    if built in _VERDICTS and not need_model:
        verdict = _VERDICTS[built]
        return (f"{key}: {verdict}" if verdict is not None else None), None
    try:
        model = probe_segmenter(head, head_params, encoder, in_channels, registry)
        _VERDICTS[built] = None
        return None, model
    except Exception as exc:
        _VERDICTS[built] = (f"seg head {head!r}{_given(head_params)} cannot build a model "
                            f"with encoder {encoder!r}: {_summary(exc)}")  # fmt: skip
        return f"{key}: {_VERDICTS[built]}", None


def model_problems(
    experiment: Experiment, configs: StageConfigs, registry: Registry, *, encoder: str | None
) -> list[str]:
    """Every model of ``experiment`` built once with random weights, each failure named
    by the key that set it: the classifiers' backbones, the pre-training model (when a
    run pre-trains, and ``encoder``, its encoder, is known before the classifier is
    trained), each distinct fine-tuning architecture, and the fit of an ``init =
    "checkpoint"`` file (:func:`~doll_core.segmentation.models.check_user_weights`)."""
    problems = _classifier_problems(experiment, registry)
    built: dict[str, Any] = {}  # architecture -> its model, None where it failed
    if "doll" in experiment.finetune.inits and encoder is not None:
        pretrain = configs.pretrain
        problem, model = _segmenter_problem(
            "pretrain", pretrain.head, pretrain.head_params, encoder, pretrain.in_channels,
            registry,
        )  # fmt: skip
        problems += [problem] if problem else []
        if problem:  # a fine-tuning that inherits the architecture fails the same way
            built[repr((pretrain.head, pretrain.head_params, encoder, pretrain.in_channels))] = None
    checked: set[tuple[str, str]] = set()

    def shape_of(config: Any) -> str:
        return repr((config.head, config.head_params, config.encoder, config.in_channels))

    started_from_files = {shape_of(c) for c in configs.finetune.values() if c.init == "checkpoint"}
    for config in configs.finetune.values():
        shape = shape_of(config)
        if shape not in built:
            problem, built[shape] = _segmenter_problem(
                "finetune", config.head, config.head_params, config.encoder,
                config.in_channels, registry, need_model=shape in started_from_files,
            )  # fmt: skip
            problems += [problem] if problem else []
        model, path = built[shape], experiment.finetune.checkpoint  # the runner's init_path
        if config.init != "checkpoint" or model is None or path is None:
            continue
        if (shape, str(path)) in checked:
            continue
        checked.add((shape, str(path)))
        try:
            check_user_weights(model, path, allow_partial=config.allow_partial)
        except DollError as exc:
            problems.append(f"finetune.checkpoint: {exc}")
    return list(dict.fromkeys(problems))
