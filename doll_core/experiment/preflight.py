"""Build every model an experiment will build, once, before any stage starts.

A plugin's factory checks the names and types of its parameters; some problems show only
when the model is built (a U-Net's ``decoder_channels`` that do not match its encoder's
depth, a backbone's local ``weights`` file that does not fit it, a fine-tuning
``checkpoint`` that fits too little of the model). Built here with random weights, on
CPU, they are found in seconds instead of after hours of classifier training and
explanation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.registry import Registry
from doll_core.segmentation.models import check_user_weights, probe_segmenter

if TYPE_CHECKING:
    from doll_core.experiment.config import Experiment, StageConfigs


def _summary(exc: Exception) -> str:
    """One line: a DoLL error's message, else the exception's type and first line."""
    if isinstance(exc, DollError):
        return str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _given(params: dict[str, Any]) -> str:
    """`` with NAME = VALUE, ...`` for the parameters a user gave, or nothing."""
    return " with " + ", ".join(f"{k} = {v!r}" for k, v in params.items()) if params else ""


def _classifier_problems(experiment: Experiment, registry: Registry) -> list[str]:
    """Each classifier's backbone, built for the 14 observations (with its local weights,
    where it names a file)."""
    problems = []
    for name, settings in experiment.classifiers.items():
        params = settings.backbone_params
        key = f"classifiers.{name}.backbone" + ("_params" if params else "")
        try:
            backbone = registry.create("backbone", settings.backbone, **params)
            backbone.build(num_classes=len(OBSERVATIONS), in_channels=settings.in_channels)
        except Exception as exc:
            problems.append(f"{key}: backbone {settings.backbone!r}{_given(params)} cannot "
                            f"build its model: {_summary(exc)}")  # fmt: skip
    return problems


def _segmenter_problem(
    section: str,
    head: str,
    head_params: dict[str, Any],
    encoder: str,
    in_channels: int,
    registry: Registry,
) -> tuple[str | None, Any]:
    """``(problem, model)``: the segmentation model built for one class, or why not."""
    try:
        return None, probe_segmenter(head, head_params, encoder, in_channels, registry)
    except Exception as exc:
        key = f"{section}.head_params" if head_params else f"{section}.head"
        return (
            f"{key}: seg head {head!r}{_given(head_params)} cannot build a model with "
            f"encoder {encoder!r}: {_summary(exc)}",
            None,
        )


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
    for config in configs.finetune.values():
        shape = repr((config.head, config.head_params, config.encoder, config.in_channels))
        if shape not in built:
            problem, built[shape] = _segmenter_problem(
                "finetune", config.head, config.head_params, config.encoder,
                config.in_channels, registry,
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
