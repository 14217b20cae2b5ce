"""The experiment file (TOML): its schema and its validation before any work starts.

An experiment names every stage of the pipeline::

    name = "quickstart"
    device = "auto"

    [data.phantom]              # or [data.classification] root = "/data/chexpert"
    n_train = 600
    [data.tasks.organs]
    phantom = "organs"          # or root = "/data/jsrt", dataset = "jsrt"

    [training]                  # shared by every classifier
    image_size = 64
    [classifiers.resnet18]
    backbone = "resnet18"

    [explanation]               # any label-generation key
    explainer = "integrated_gradients"
    [fusion]
    name = "mean"
    [pretrain]                  # any pre-training key, plus encoder_from
    encoder_from = "resnet18"
    [finetune]                  # any fine-tuning key, plus the grid below
    inits = ["random", "classifier", "doll"]
    budgets = [8, "all"]
    seeds = [0, 1, 2]

Stage sections are validated against the stage configs themselves
(:class:`~doll_core.training.config.ClassifierTrainingConfig`,
:class:`~doll_core.labels.config.LabelGenerationConfig`,
:class:`~doll_core.segmentation.config.PretrainConfig`,
:class:`~doll_core.segmentation.config.FinetuneConfig`), so every key of the single-stage
commands works here too, except the keys the runner fills in (data paths, checkpoints).
"""

from __future__ import annotations

import inspect
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from doll_core.configuration import validation_problems
from doll_core.errors import DollError
from doll_core.experiment.overrides import apply_overrides
from doll_core.labels.config import LabelGenerationConfig
from doll_core.registry import Registry, get_registry
from doll_core.segmentation.config import FinetuneConfig, PretrainConfig
from doll_core.training.config import ClassifierTrainingConfig

Init = Literal["random", "classifier", "doll", "checkpoint"]
DEFAULT_INITS: tuple[Init, ...] = ("random", "classifier", "doll")
DEFAULT_BUDGETS: tuple[int | Literal["all"], ...] = (8, "all")

#: Keys of the stage configs that the runner fills in from other sections.
RUNNER_KEYS: dict[str, tuple[str, ...]] = {
    "classifier": ("data", "dataset", "dataset_options", "train_split", "val_split", "device"),
    "explanation": (
        "data",
        "dataset",
        "dataset_options",
        "classifiers",
        "fusion",
        "fusion_params",
        "device",
    ),
    "pretrain": ("labels", "data", "encoder_from", "device"),
    "finetune": (
        "data",
        "dataset",
        "dataset_options",
        "splits",
        "init",
        "init_path",
        "n_labeled",
        "seed",
        "device",
    ),
}

#: Where each phantom downstream task lives in a phantom folder, and how it is read.
PHANTOM_TASKS: dict[str, dict[str, Any]] = {
    "organs": {"folder": "organs", "dataset": "segfolder", "splits": "random"},
    "infection": {"folder": "COVID-QU-Ex", "dataset": "covid-qu-ex", "splits": "folders"},
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhantomData(_Section):
    """A phantom to generate (``doll data phantom``) as the experiment's data."""

    n_train: int = Field(600, ge=1)
    n_valid: int = Field(100, ge=1)
    n_organs: int = Field(100, ge=0)
    n_infection: int = Field(120, ge=0)
    size: int = Field(128, ge=32, le=2048)
    seed: int = 0
    workers: int = Field(1, ge=1, description="processes; does not change the phantom")


class ClassificationData(_Section):
    """The CheXpert-layout classification set (default: the phantom's)."""

    root: Path | None = None
    dataset: str = "chexpert"
    options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "valid"


class TaskData(_Section):
    """One downstream segmentation task: a phantom task or a folder on disk."""

    phantom: Literal["organs", "infection"] | None = None
    root: Path | None = None
    dataset: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    splits: Literal["random", "folders"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TaskData:
        if (self.phantom is None) == (self.root is None):
            raise ValueError("give exactly one of phantom = 'organs'|'infection' or root = PATH")
        return self

    def reader(self) -> tuple[str, str]:
        """``(dataset plugin, splits)`` for this task."""
        if self.phantom is not None:
            known = PHANTOM_TASKS[self.phantom]
            return self.dataset or known["dataset"], self.splits or known["splits"]
        return self.dataset or "segfolder", self.splits or "random"


class DataSection(_Section):
    phantom: PhantomData | None = None
    classification: ClassificationData = ClassificationData()
    tasks: dict[str, TaskData] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_source(self) -> DataSection:
        if self.phantom is None and self.classification.root is None:
            raise ValueError("give [data.phantom] or data.classification.root")
        for name, task in self.tasks.items():
            if task.phantom is not None and self.phantom is None:
                raise ValueError(f"task {name!r} reads the phantom, but there is no [data.phantom]")
        return self


class ExplanationSection(BaseModel):
    """Label-generation keys, plus ``classifiers`` (which ones to explain; default all)
    and ``params``: explainer parameters by explainer name, used when that explainer is
    the chosen one (so an ablation over explainers gives each its own settings)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    classifiers: list[str] | None = None
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)


class FusionSection(_Section):
    name: str = "mean"
    params: dict[str, Any] = Field(default_factory=dict)


class PretrainSection(BaseModel):
    """Pre-training keys, plus ``encoder_from``: the classifier whose weights start the
    encoder (default: none, a random encoder named by ``encoder``)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    encoder_from: str | None = None


class FinetuneSection(BaseModel):
    """Fine-tuning keys, plus the grid of runs."""

    model_config = ConfigDict(extra="allow", frozen=True)
    tasks: list[str] | None = Field(None, description="default: every task in [data.tasks]")
    inits: list[Init] = Field(default_factory=lambda: list(DEFAULT_INITS))
    budgets: list[int | Literal["all"]] = Field(default_factory=lambda: list(DEFAULT_BUDGETS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    classifier: str | None = Field(
        None, description="for init 'classifier'; default: pretrain.encoder_from"
    )
    checkpoint: Path | None = Field(None, description="for init 'checkpoint'")


class AblationSection(_Section):
    """The grid ``doll ablate`` runs when no ``--vary`` is given: dotted key -> values.
    ``doll run`` ignores it."""

    vary: dict[str, Any] = Field(default_factory=dict)


class ReportSection(_Section):
    overlay_images: int = Field(6, ge=0, description="images in the label overlay figure")
    localization: bool = Field(True, description="score labels against phantom masks")


class Experiment(_Section):
    """A whole experiment, validated; stage configs come from :mod:`.plan`."""

    name: str = "experiment"
    description: str = ""
    device: str = "auto"
    data: DataSection
    training: dict[str, Any] = Field(default_factory=dict)
    classifiers: dict[str, dict[str, Any]] = Field(min_length=1)
    explanation: ExplanationSection = ExplanationSection()
    fusion: FusionSection = FusionSection()
    pretrain: PretrainSection = PretrainSection()
    finetune: FinetuneSection = FinetuneSection()
    report: ReportSection = ReportSection()
    ablation: AblationSection = AblationSection()

    # -- the stage configs, before the runner fills in paths --------------------------

    def classifier_settings(self, name: str) -> dict[str, Any]:
        return {**self.training, **self.classifiers[name]}

    def explanation_settings(self) -> dict[str, Any]:
        """Label-generation keys, with ``params[explainer]`` merged into
        ``explainer_params``."""
        settings = dict(self.explanation.model_extra or {})
        explainer = settings.get("explainer", "integrated_gradients")
        specific = self.explanation.params.get(explainer) if isinstance(explainer, str) else None
        general = settings.get("explainer_params", {})
        if specific and isinstance(general, dict):  # not a table: validation says so
            settings["explainer_params"] = {**general, **specific}
        return settings

    def pretrain_settings(self) -> dict[str, Any]:
        return dict(self.pretrain.model_extra or {})

    def finetune_settings(self) -> dict[str, Any]:
        return dict(self.finetune.model_extra or {})

    def explained_classifiers(self) -> list[str]:
        return list(self.explanation.classifiers or self.classifiers)

    def finetune_tasks(self) -> list[str]:
        return list(self.finetune.tasks if self.finetune.tasks is not None else self.data.tasks)

    def init_classifier(self) -> str | None:
        return self.finetune.classifier or self.pretrain.encoder_from


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
    """Relative data paths are relative to the experiment file's folder."""
    data = document.get("data")
    if isinstance(data, dict):
        classification = data.get("classification")
        if isinstance(classification, dict) and isinstance(classification.get("root"), str):
            classification["root"] = str(base / Path(classification["root"]).expanduser())
        tasks = data.get("tasks")
        for task in tasks.values() if isinstance(tasks, dict) else ():
            if isinstance(task, dict) and isinstance(task.get("root"), str):
                task["root"] = str(base / Path(task["root"]).expanduser())
    finetune = document.get("finetune")
    if isinstance(finetune, dict) and isinstance(finetune.get("checkpoint"), str):
        finetune["checkpoint"] = str(base / Path(finetune["checkpoint"]).expanduser())
    return document


def _check_stage(
    model: type[BaseModel],
    stage: str,
    where: str,
    settings: Mapping[str, Any],
    filled: Mapping[str, Any],
    problems: list[str],
    origin: Mapping[str, str] | None = None,
) -> None:
    """Validate ``settings`` as ``model`` with the runner's keys ``filled`` in.

    :param origin: the section a key came from when not ``where`` (a classifier's keys
        from ``[training]``), so that a problem names the key the user wrote.
    """
    for key in RUNNER_KEYS[stage]:
        problem = f"{(origin or {}).get(key, where)}.{key}: set by the runner from other sections"
        if key in settings and f"{problem}; remove it" not in problems:
            problems.append(f"{problem}; remove it")
    values = {**settings, **filled}
    try:
        model.model_validate(values)
    except ValidationError as exc:
        origin = origin or {}
        for item, line in zip(exc.errors(), validation_problems(exc), strict=True):
            if item["loc"]:
                problem = f"{origin.get(str(item['loc'][0]), where)}.{line}"
            else:  # a check across fields: the section of the first key it names
                named = [k for k in origin if re.search(rf"\b{re.escape(k)}\b", item["msg"])]
                problem = f"{origin[named[0]] if named else where}: {item['msg']}"
            if problem not in problems:  # a [training] key: once, not once per classifier
                problems.append(problem)


def _check_plugin(
    registry: Registry,
    kind: str,
    name: Any,
    where: str,
    problems: list[str],
    params: Any = None,
    params_where: str | Mapping[str, str] = "",
) -> None:
    """Is ``name`` a plugin of ``kind``; with ``params``, does the plugin accept them
    (their types are checked against the factory's annotations, each bad one named by its
    key under ``params_where``, then the plugin object is created, which for explainers and
    fusions is cheap)?"""
    if not isinstance(name, str):
        return  # a wrong type is reported by the stage validation
    try:
        info = registry.get(kind, name)
    except DollError as exc:
        problems.append(f"{where}: {exc}")
        return
    if not isinstance(params, dict):
        return
    if isinstance(params_where, Mapping):
        tables = {key: params_where.get(key, where) for key in params}
    else:
        tables = {key: params_where or where for key in params}
    found = _parameter_problems(info.factory, params, tables, f"{kind} {name!r}")
    if found:
        problems.extend(problem for problem in found if problem not in problems)
        return
    try:
        registry.create(kind, name, **params)
    except DollError as exc:  # the plugin refused its parameters: name their table
        table = params_where if isinstance(params_where, str) and params_where and params else where
        if f"{table}: {exc}" not in problems:
            problems.append(f"{table}: {exc}")


def _parameter_problems(
    factory: Any, params: Mapping[str, Any], tables: Mapping[str, str], plugin: str
) -> list[str]:
    """``params`` checked against the signature of ``factory``: a name it does not take,
    or a value that no annotated type can take (pydantic's lax mode), each problem named
    ``TABLE.key`` with the table the user wrote the key in (``tables[key]``). A factory
    without a signature or with annotations that do not resolve is left to its own checks.
    """
    try:
        signature = inspect.signature(factory, eval_str=True)
    except Exception:  # a builtin without a signature, or an unresolvable annotation
        return []
    parameters = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        takes = ", ".join(parameters) or "no parameters"
        unknown = [
            f"{tables[key]}.{key}: {plugin} has no parameter {key!r}; it takes: {takes}"
            for key in params
            if key not in parameters
        ]
        if unknown:
            return unknown
    fields: dict[str, Any] = {
        key: (parameter.annotation, ...)
        for key, parameter in parameters.items()
        if key in params and parameter.annotation is not inspect.Parameter.empty
    }
    if not fields:
        return []
    try:
        model = create_model(
            "PluginParameters", __config__=ConfigDict(arbitrary_types_allowed=True), **fields
        )
        model.model_validate({key: params[key] for key in fields})
    except ValidationError as exc:
        return [
            f"{tables[str(item['loc'][0])]}.{line}"
            for item, line in zip(exc.errors(), validation_problems(exc), strict=True)
        ]
    except Exception:  # an annotation pydantic cannot check: leave it to the plugin
        return []
    return []


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


def validate_experiment(
    document: Mapping[str, Any], *, source: str = "experiment", registry: Registry | None = None
) -> Experiment:
    """Check everything that can be checked before work starts and return the experiment.

    :raises DollError: listing every problem, one per line, each naming its key.
    """
    not_finite = _non_finite_numbers(document)
    if not_finite:  # nan and inf are valid TOML, and pydantic takes them for any float
        raise DollError("\n  ".join([f"invalid experiment {source}:", *not_finite]))
    try:
        experiment = Experiment.model_validate(dict(document))
    except ValidationError as exc:
        lines = validation_problems(exc)
        raise DollError("\n  ".join([f"invalid experiment {source}:", *lines])) from None
    registry = registry or get_registry()
    problems: list[str] = []
    placeholder = Path("<data>")
    data = experiment.data
    for name in experiment.classifiers:
        where = f"classifiers.{name}"
        settings = experiment.classifier_settings(name)
        shared = {key: "training" for key in experiment.training}
        _check_stage(
            ClassifierTrainingConfig,
            "classifier",
            where,
            settings,
            {"data": placeholder},
            problems,
            origin={**shared, **{key: where for key in experiment.classifiers[name]}},
        )
        _check_plugin(
            registry,
            "backbone",
            settings.get("backbone", "tiny_cnn"),
            f"{where}.backbone",
            problems,
        )
    _check_plugin(
        registry, "dataset", data.classification.dataset, "data.classification.dataset", problems
    )
    if data.classification.root is not None and not data.classification.root.is_dir():
        problems.append(f"data.classification.root: folder not found: {data.classification.root}")
    for name, task in data.tasks.items():
        dataset, _ = task.reader()
        _check_plugin(registry, "dataset", dataset, f"data.tasks.{name}.dataset", problems)
        if task.root is not None and not task.root.is_dir():
            problems.append(f"data.tasks.{name}.root: folder not found: {task.root}")

    for name in experiment.explained_classifiers():
        if name not in experiment.classifiers:
            problems.append(
                f"explanation.classifiers: no classifier named {name!r} "
                f"(have: {', '.join(experiment.classifiers)})"
            )
    explanation = experiment.explanation_settings()
    _check_stage(
        LabelGenerationConfig,
        "explanation",
        "explanation",
        explanation,
        {"data": placeholder, "classifiers": [placeholder], "fusion": experiment.fusion.name},
        problems,
    )
    explainer = explanation.get("explainer", "integrated_gradients")
    specific = experiment.explanation.params.get(explainer) if isinstance(explainer, str) else None
    merged = explanation.get("explainer_params", {})
    _check_plugin(
        registry,
        "explainer",
        explainer,
        "explanation.explainer",
        problems,
        params=merged,
        params_where={  # where the user wrote each key
            key: f"explanation.params.{explainer}"
            if key in (specific or {})
            else "explanation.explainer_params"
            for key in (merged if isinstance(merged, dict) else {})
        },
    )
    for name, params in experiment.explanation.params.items():
        where = f"explanation.params.{name}"
        _check_plugin(registry, "explainer", name, where, problems, params=params)
    _check_plugin(
        registry,
        "fusion",
        experiment.fusion.name,
        "fusion.name",
        problems,
        params=experiment.fusion.params,
        params_where="fusion.params",
    )

    pretrain = experiment.pretrain_settings()
    _check_stage(
        PretrainConfig, "pretrain", "pretrain", pretrain, {"labels": placeholder}, problems
    )
    _check_plugin(registry, "seg_head", pretrain.get("head", "unet"), "pretrain.head", problems)
    encoder_from = experiment.pretrain.encoder_from
    if encoder_from is not None and encoder_from not in experiment.classifiers:
        problems.append(
            f"pretrain.encoder_from: no classifier named {encoder_from!r} "
            f"(have: {', '.join(experiment.classifiers)})"
        )
    elif encoder_from is None and "encoder" not in pretrain:
        problems.append("pretrain: give encoder_from = CLASSIFIER or encoder = NAME")
    elif encoder_from is not None:
        backbone = experiment.classifier_settings(encoder_from).get("backbone", "tiny_cnn")
        _check_encoder(
            registry, backbone, f"pretrain.encoder_from (classifiers.{encoder_from})", problems
        )

    finetune = experiment.finetune
    _check_stage(
        FinetuneConfig,
        "finetune",
        "finetune",
        experiment.finetune_settings(),
        {"data": placeholder},
        problems,
    )
    _check_plugin(
        registry,
        "seg_head",
        experiment.finetune_settings().get("head", pretrain.get("head", "unet")),
        "finetune.head",
        problems,
    )
    for task_name in experiment.finetune_tasks():
        if task_name not in data.tasks:
            problems.append(
                f"finetune.tasks: no task named {task_name!r} in [data.tasks] "
                f"(have: {', '.join(data.tasks) or 'none'})"
            )
    if not experiment.finetune_tasks() and finetune.inits:
        problems.append("finetune: no downstream task; add [data.tasks.NAME]")
    if "classifier" in finetune.inits:
        chosen = experiment.init_classifier()
        if chosen is None:
            problems.append(
                "finetune.classifier: init 'classifier' needs a classifier "
                "(finetune.classifier or pretrain.encoder_from)"
            )
        elif chosen not in experiment.classifiers:
            problems.append(f"finetune.classifier: no classifier named {chosen!r}")
        else:
            backbone = experiment.classifier_settings(chosen).get("backbone", "tiny_cnn")
            _check_encoder(
                registry, backbone, f"finetune.classifier (classifiers.{chosen})", problems
            )
    if "checkpoint" in finetune.inits:
        if finetune.checkpoint is None:
            problems.append("finetune.checkpoint: init 'checkpoint' needs a file")
        elif not finetune.checkpoint.is_file():
            problems.append(f"finetune.checkpoint: file not found: {finetune.checkpoint}")
    if len(set(finetune.budgets)) != len(finetune.budgets):
        problems.append("finetune.budgets: a budget is listed twice")
    if len(set(finetune.seeds)) != len(finetune.seeds):
        problems.append("finetune.seeds: a seed is listed twice")
    if problems:
        raise DollError("\n  ".join([f"invalid experiment {source}:", *problems]))
    return experiment


def _check_encoder(registry: Registry, backbone: Any, where: str, problems: list[str]) -> None:
    if not isinstance(backbone, str) or backbone not in registry.names("backbone"):
        return
    if registry.get("backbone", backbone).metadata.get("encoder_name") is None:
        problems.append(
            f"{where}: backbone {backbone!r} has no segmentation-encoder "
            "counterpart, so its weights cannot start a segmentation model"
        )


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
    return experiment, experiment.model_dump(mode="json")
