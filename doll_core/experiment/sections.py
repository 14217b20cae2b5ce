"""The experiment file (TOML): its sections, each a settings model.

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

    [explanation]               # label-generation settings
    explainer = "integrated_gradients"
    [fusion]
    name = "mean"
    [pretrain]                  # pre-training settings, plus encoder_from
    encoder_from = "resnet18"
    [finetune]                  # fine-tuning settings, plus the grid below
    inits = ["random", "classifier", "doll"]
    budgets = [8, "all"]
    seeds = [0, 1, 2]

Each stage section *is* that stage's settings model
(:class:`~doll_core.training.config.ClassifierSettings`,
:class:`~doll_core.labels.config.LabelSettings`,
:class:`~doll_core.segmentation.config.PretrainSettings`,
:class:`~doll_core.segmentation.config.FinetuneSettings`), so its keys, defaults and bounds
are the single-stage commands' own. The keys of a stage's inputs (data paths, checkpoints,
the device) are the runner's: :func:`~doll_core.experiment.config.stage_configs` fills
them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from doll_core.attribution.api import split_engine_options, takes_engine, with_engine_options
from doll_core.configuration import (
    KEY_WHEN_CHANGED,
    NEVER_IN_KEY,
    Problems,
    Settings,
    context_registry,
    plugin_problems,
    raise_problems,
)
from doll_core.devices import device_field
from doll_core.evaluation.settings import EvaluationSettings
from doll_core.labels.config import LabelInputs, LabelSettings
from doll_core.phantom.labels import FindingsConfig
from doll_core.segmentation.config import (
    FinetuneInputs,
    FinetuneSettings,
    PretrainInputs,
    PretrainSettings,
)
from doll_core.segmentation.splits import SplitSpec
from doll_core.training.config import ClassifierInputs, ClassifierSettings, StageInputs

Init = Literal["random", "classifier", "doll", "checkpoint"]


DEFAULT_INITS: tuple[Init, ...] = ("random", "classifier", "doll")


DEFAULT_BUDGETS: tuple[int | Literal["all"], ...] = (8, "all")


#: Where each phantom downstream task lives in a phantom folder, and how it is read.
PHANTOM_TASKS: dict[str, dict[str, Any]] = {
    "organs": {"folder": "organs", "dataset": "segfolder", "splits": "random"},
    "infection": {"folder": "COVID-QU-Ex", "dataset": "covid-qu-ex", "splits": "folders"},
}


#: The stage sections of an experiment and the inputs the runner fills in for them (a
#: section that sets one is told so; ``[classifiers.NAME]`` as ``[training]``).
RUNNER_INPUTS: dict[str, type[StageInputs]] = {
    "training": ClassifierInputs,
    "explanation": LabelInputs,
    "pretrain": PretrainInputs,
    "finetune": FinetuneInputs,
}


class _Section(Settings):
    """Settings frozen, with unknown keys refused (:class:`Settings`)."""


class PhantomData(_Section):
    """A phantom to generate (``doll data phantom``) as the experiment's data."""

    n_train: int = Field(600, ge=1, description="classification images of the training split")
    n_valid: int = Field(100, ge=1, description="classification images of the validation split")
    n_organs: int = Field(
        100,
        ge=0,
        description="images of the organ segmentation task (lungs, heart, clavicles)",
    )
    n_infection: int = Field(120, ge=0, description="images of the infection segmentation task")
    size: int = Field(128, ge=32, le=2048, description="image side in pixels")
    seed: int = Field(0, description="seed of every random draw of the phantom")
    finding_contrast: float = Field(
        FindingsConfig.contrast,
        gt=0,
        le=10,
        description="factor on every finding's change",
        json_schema_extra=KEY_WHEN_CHANGED,  # it came after 0.1: earlier phantoms stay
    )
    workers: int = Field(
        1,
        ge=1,
        description="processes; does not change the phantom",
        json_schema_extra=NEVER_IN_KEY,
    )


class ClassificationData(_Section):
    """The CheXpert-layout classification set (default: the phantom's); unset keys take
    the classifier-training defaults (:class:`~doll_core.training.config.ClassifierInputs`)."""

    root: Path | None = Field(
        None,
        description="the classification set's folder (default: the phantom's)",
    )
    dataset: str | None = Field(None, description="the dataset reader plugin (default: chexpert)")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the reader's options (dataset_options), e.g. uncertainty or frontal_only",
    )
    train_split: str | None = Field(
        None,
        description="the reader's split the classifiers learn from (default: train)",
    )
    val_split: str | None = Field(
        None,
        description="the reader's split that picks the best epoch (default: valid)",
    )

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> ClassificationData:
        problems = [("root", m) for _, m in _folder_problems(self.root)]
        if self.dataset is not None:
            problems += plugin_problems(context_registry(info), "dataset", self.dataset, "dataset")
        raise_problems(problems)
        return self

    def source(self) -> dict[str, Any]:
        """The keys of the classification inputs that this section sets."""
        values: dict[str, Any] = {"dataset": self.dataset, "dataset_options": self.options}
        values |= {"train_split": self.train_split, "val_split": self.val_split}
        return {key: value for key, value in values.items() if value is not None}


def _folder_problems(path: Path | None) -> Problems:
    return [("", f"folder not found: {path}")] if path and not path.is_dir() else []


class TaskData(_Section):
    """One downstream segmentation task: a phantom task or a folder on disk (read with
    the fine-tuning defaults, :class:`~doll_core.segmentation.config.FinetuneInputs`, unless
    ``dataset``/``splits`` say otherwise)."""

    phantom: Literal["organs", "infection"] | None = Field(
        None,
        description="a phantom task: organs or infection (give this or root)",
    )
    root: Path | None = Field(None, description="the task's folder on disk (give this or phantom)")
    dataset: str | None = Field(
        None,
        description="the segmentation reader plugin (default: segfolder)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the reader's options (dataset_options)",
    )
    splits: Literal["random", "patients", "file", "folders"] | None = Field(
        None,
        description="random (by image), patients (random by patient), file (split_file), "
        "folders (the dataset's own); default: the reader's (random for a folder)",
    )
    split_file: Path | None = Field(None, description="splits = 'file': CSV of image, split")
    patient_file: Path | None = Field(None, description="CSV of image, patient")
    patient_column: str | None = Field(None, description="patient_file's column of patients")
    patient_pattern: str | None = Field(None, description="regex over the image id: patient")

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> TaskData:
        if (self.phantom is None) == (self.root is None):
            raise ValueError("give exactly one of phantom = 'organs'|'infection' or root = PATH")
        problems = [("root", m) for _, m in _folder_problems(self.root)]
        for key in ("split_file", "patient_file"):
            path = getattr(self, key)
            if path is not None and not path.is_file():
                problems.append((key, f"file not found: {path}"))
        spec = SplitSpec(
            mode=self.reader().get("splits", "random"),
            split_file=self.split_file,
            patient_file=self.patient_file,
            patient_pattern=self.patient_pattern,
        )
        problems += [("splits", message) for message in spec.problems(check_files=False)]
        if (dataset := self.reader().get("dataset")) is not None:
            problems += plugin_problems(context_registry(info), "dataset", dataset, "dataset")
        raise_problems(problems)
        return self

    def reader(self) -> dict[str, Any]:
        """The fine-tuning inputs that say how this task is read (dataset, options, splits)."""
        known = PHANTOM_TASKS[self.phantom] if self.phantom is not None else {}
        values = {
            "dataset": self.dataset or known.get("dataset"),
            "splits": self.splits or known.get("splits"),
            "dataset_options": self.options,
            "split_file": self.split_file,
            "patient_file": self.patient_file,
            "patient_column": self.patient_column,
            "patient_pattern": self.patient_pattern,
        }
        return {key: value for key, value in values.items() if value is not None}


class DataSection(_Section):
    """Where the experiment's data come from: a phantom it generates, a classification
    set on disk, or both (then the classifiers read the set), and the downstream tasks."""

    phantom: PhantomData | None = Field(
        None,
        description="generate a phantom as the experiment's data ([data.phantom])",
    )
    classification: ClassificationData = Field(
        ClassificationData(),
        description="the classification set the classifiers learn from and the labels explain",
    )
    tasks: dict[str, TaskData] = Field(
        default_factory=dict,
        description="the downstream segmentation tasks, by name ([data.tasks.NAME])",
    )

    @model_validator(mode="after")
    def _has_source(self) -> DataSection:
        if self.phantom is None and self.classification.root is None:
            raise ValueError("give [data.phantom] or data.classification.root")
        for name, task in self.tasks.items():
            if task.phantom is not None and self.phantom is None:
                raise ValueError(f"task {name!r} reads the phantom, but there is no [data.phantom]")
        return self


class ExplanationSection(LabelSettings):
    """Label-generation settings, plus ``classifiers`` (which ones to explain; default all),
    ``params``: explainer parameters by explainer name, used when that explainer is the
    chosen one (so an ablation over explainers gives each its own settings), and
    ``reader_options``: options of the classification reader for the images explained,
    over ``[data.classification]``'s (the classifiers may learn from one source and
    explain all)."""

    classifiers: list[str] | None = Field(
        None,
        description="the classifiers explained (default: all)",
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="explainer parameters by explainer name, used when that explainer is chosen",
    )
    reader_options: dict[str, Any] = Field(
        default_factory=dict,
        description="reader options of the images explained, over [data.classification]'s "
        "(e.g. explain every source while the classifiers learn from one)",
    )

    @model_validator(mode="before")
    @classmethod
    def _engine_options_out_of_params(cls, values: Any, info: ValidationInfo) -> Any:
        """Engine options written in ``[explanation.params.NAME]`` (before 0.2) for an
        explainer that takes them move to ``[explanation.engine]`` when NAME is the chosen
        explainer (the old place winning, as a ``--set`` there means), with a warning."""
        tables = values.get("params") if isinstance(values, dict) else None
        if not isinstance(tables, dict):
            return values
        chosen = values.get("explainer", LabelSettings.model_fields["explainer"].default)
        params: dict[str, Any] = {}
        engine: dict[str, Any] = {}
        for name, table in tables.items():
            if isinstance(table, dict) and takes_engine(name, context_registry(info)):
                where = f"explanation.params.{name}"
                table, moved = split_engine_options(table, where, "[explanation.engine]")
                engine |= moved if name == chosen else {}
            params[name] = table
        return {**with_engine_options(values, engine), "params": params}

    def label_settings(self) -> dict[str, Any]:
        """The :class:`LabelSettings` values, ``params[explainer]`` merged into
        ``explainer_params``."""
        values = self.model_dump(exclude={"classifiers", "params", "reader_options"})
        values["explainer_params"] = self.explainer_params | self.params.get(self.explainer, {})
        return values

    @model_validator(mode="after")
    def _plugins(self, info: ValidationInfo) -> ExplanationSection:
        specific = self.params.get(self.explainer, {})
        where = {key: f"params.{self.explainer}" for key in specific}
        registry = context_registry(info)
        problems = plugin_problems(
            registry,
            "explainer",
            self.explainer,
            "explainer",
            params=self.label_settings()["explainer_params"],
            tables=lambda key: where.get(key, "explainer_params"),
        )
        for name, params in self.params.items():
            problems += plugin_problems(
                registry,
                "explainer",
                name,
                f"params.{name}",
                params=params,
                tables=f"params.{name}",
            )
        raise_problems(problems)
        return self


class FusionSection(_Section):
    """The fusion of the classifiers' maps; an unset ``name`` is label generation's
    default (:class:`~doll_core.labels.config.LabelInputs`)."""

    name: str | None = Field(None, description="the fusion plugin (default: mean)")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the fusion plugin's parameters",
    )

    @model_validator(mode="after")
    def _plugin(self, info: ValidationInfo) -> FusionSection:
        name = self.inputs()["fusion"]
        registry = context_registry(info)
        raise_problems(plugin_problems(registry, "fusion", name, "name", self.params, "params"))
        return self

    def inputs(self) -> dict[str, Any]:
        """The label-generation inputs this section sets (``fusion``, ``fusion_params``)."""
        name = self.name or LabelInputs.model_fields["fusion"].default
        return {"fusion": name, "fusion_params": self.params}


class PretrainSection(PretrainSettings):
    """Pre-training settings, plus ``encoder_from``: the classifier whose weights start the
    encoder (default: none, a random encoder named by ``encoder``)."""

    encoder_from: str | None = Field(
        None,
        description=(
            "the classifier whose weights start the encoder (default: none, a random "
            "encoder named by encoder)"
        ),
    )

    @model_validator(mode="after")
    def _plugin(self, info: ValidationInfo) -> PretrainSection:
        registry = context_registry(info)
        head, params = self.head, self.head_params
        raise_problems(plugin_problems(registry, "seg_head", head, "head", params, "head_params"))
        return self


class FinetuneSection(FinetuneSettings):
    """Fine-tuning settings, plus the grid of runs. ``head``, ``head_params``, ``encoder``
    and ``image_size`` default to the pre-trained model's, so that every init fine-tunes
    the same architecture."""

    tasks: list[str] | None = Field(None, description="default: every task in [data.tasks]")
    inits: list[Init] = Field(
        default_factory=lambda: list(DEFAULT_INITS),
        description="the initialisations compared: random, classifier, doll, checkpoint",
    )
    budgets: list[Annotated[int, Field(ge=1)] | Literal["all"]] = Field(
        description="training images per run (an integer, or 'all')",
        default_factory=lambda: list(DEFAULT_BUDGETS),
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="seeds of each (task, init, budget): runs are paired by seed",
    )
    classifier: str | None = Field(
        None, description="for init 'classifier'; default: pretrain.encoder_from"
    )
    checkpoint: Path | None = Field(None, description="for init 'checkpoint'")

    @staticmethod
    def inherited() -> tuple[str, ...]:
        """The settings taken from the pre-trained model's unless set here."""
        return ("head", "head_params", "encoder", "image_size")

    @model_validator(mode="after")
    def _grid(self) -> FinetuneSection:
        problems: Problems = []
        if "checkpoint" in self.inits:
            if self.checkpoint is None:
                problems.append(("checkpoint", "init 'checkpoint' needs a file"))
            elif not self.checkpoint.is_file():
                problems.append(("checkpoint", f"file not found: {self.checkpoint}"))
        for key in ("budgets", "seeds"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                problems.append((key, f"a {key[:-1]} is listed twice"))
        raise_problems(problems)
        return self


class AblationSection(_Section):
    """The grid ``doll ablate`` runs when no ``--vary`` is given: dotted key -> values.
    ``doll run`` ignores it."""

    vary: dict[str, Any] = Field(
        default_factory=dict,
        description="the grid doll ablate runs without --vary: dotted key -> list of values",
    )


class ReportSection(_Section):
    """What the run's report draws and scores besides its tables."""

    overlay_images: int = Field(6, ge=0, description="images in the label overlay figure")
    localization: bool = Field(True, description="score labels against phantom masks")


class Experiment(_Section):
    """A whole experiment, validated; each stage's configuration comes from
    :func:`~doll_core.experiment.config.stage_configs`. ``classifiers`` holds each
    classifier's settings with ``[training]`` merged in."""

    name: str = Field("experiment", description="the experiment's name, in its reports")
    description: str = Field(
        "",
        description="one line on what the experiment shows, in its reports",
    )
    device: Annotated[str, AfterValidator(device_field)] = Field(
        "auto",
        description=(
            "cpu, cuda, cuda:N, mps or auto (the first accelerator); doll run --device overrides it"
        ),
    )
    data: DataSection = Field(description="where the data come from ([data])")
    training: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "classifier settings shared by every [classifiers.NAME] (each may override them)"
        ),
    )
    classifiers: dict[str, ClassifierSettings] = Field(
        min_length=1,
        description="the classifiers to train and explain, by name",
    )
    explanation: ExplanationSection = Field(
        ExplanationSection(),
        description="how the classifiers are explained into labels",
    )
    fusion: FusionSection = Field(
        FusionSection(),
        description="how the classifiers' maps are fused into one label",
    )
    pretrain: PretrainSection = Field(
        PretrainSection(),
        description="DoLL pre-training of a whole segmentation model on the labels",
    )
    finetune: FinetuneSection = Field(
        FinetuneSection(),
        description="the fine-tuning grid: tasks x inits x budgets x seeds",
    )
    report: ReportSection = Field(ReportSection(), description="figures of the run's report")
    ablation: AblationSection = Field(AblationSection(), description="the grid doll ablate runs")
    evaluation: EvaluationSettings = Field(
        EvaluationSettings(),
        description="explainer metrics computed in the run (none by default)",
    )

    @model_validator(mode="before")
    @classmethod
    def _shared_training(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        training, classifiers = (values.get(k) for k in ("training", "classifiers"))
        if isinstance(training, dict) and isinstance(classifiers, dict):
            merged = {
                n: {**training, **c} if isinstance(c, dict) else c for n, c in classifiers.items()
            }
            values = {**values, "classifiers": merged}
        return values

    def document(self) -> dict[str, Any]:
        """The resolved experiment as JSON, what a run folder records (``experiment.json``)
        and :func:`~doll_core.experiment.loading.validate_experiment` reads back to the
        same experiment: every setting, except the fine-tuning keys left to the pre-trained
        model's."""
        document = self.model_dump(mode="json")
        for key in set(FinetuneSection.inherited()) - self.finetune.model_fields_set:
            del document["finetune"][key]
        return document

    def explained_classifiers(self) -> list[str]:
        return list(self.explanation.classifiers or self.classifiers)

    def finetune_tasks(self) -> list[str]:
        return list(self.finetune.tasks if self.finetune.tasks is not None else self.data.tasks)

    def init_classifier(self) -> str | None:
        return self.finetune.classifier or self.pretrain.encoder_from
