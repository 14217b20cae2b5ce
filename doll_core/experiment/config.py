"""From a validated experiment to each stage's configuration: the stage settings of its
sections (:mod:`doll_core.experiment.sections`) with the inputs the runner fills in (data
paths, upstream checkpoints, the device), for ``doll run``, ``doll ablate``, ``doll
doctor``'s plan and the validation before work alike (:mod:`doll_core.experiment.loading`
reads and checks the file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doll_core.checkpoint import backbone_encoder
from doll_core.configuration import parse_config
from doll_core.errors import DollError
from doll_core.experiment.sections import Experiment, FinetuneSection
from doll_core.labels.config import LabelGenerationConfig, LabelInputs
from doll_core.registry import Registry, get_registry
from doll_core.segmentation.config import FinetuneConfig, FinetuneSettings, PretrainConfig
from doll_core.training.config import ClassifierTrainingConfig


@dataclass(frozen=True)
class DataSources:
    """Where the stages read their data, and the key that stands for it."""

    key: str
    classification_root: Path
    task_roots: dict[str, Path]
    phantom_root: Path | None

    @classmethod
    def placeholder(cls, experiment: Experiment) -> DataSources:
        """Stand-in paths, to make every stage's configuration before any data exists."""
        stand_in = Path("<data>")
        return cls("", stand_in, {name: stand_in for name in experiment.data.tasks}, None)


#: The runner's stand-in for an upstream stage's file until that stage has run.
UPSTREAM = Path("<upstream>")


@dataclass(frozen=True)
class StageConfigs:
    """Every stage's configuration for one experiment. Paths to upstream stages' files
    (checkpoints, the label store) are :data:`UPSTREAM` until the runner knows them."""

    classifiers: dict[str, ClassifierTrainingConfig]
    labels: LabelGenerationConfig
    pretrain: PretrainConfig
    finetune: dict[tuple[str, str, int | str, int], FinetuneConfig]


def stage_configs(
    experiment: Experiment,
    sources: DataSources,
    *,
    device: str | None = None,
    registry: Registry | None = None,
    image_cache: Path | None = None,
) -> StageConfigs:
    """The one place where the sections of ``experiment`` and its data ``sources`` become
    stage configurations. ``finetune`` is keyed by ``(task, init, budget, seed)``, in grid
    order. ``device`` overrides the experiment's; ``image_cache`` is every stage's folder
    of decoded images (:mod:`doll_core.data.decoded`).

    :raises DollError: naming the stage whose configuration is not valid.
    """
    registry = registry or get_registry()
    data = experiment.data
    classification = {"data": sources.classification_root, **data.classification.source()}
    common: dict[str, Any] = {"device": device or experiment.device, "image_cache": image_cache}
    classifiers = {
        name: parse_config(
            ClassifierTrainingConfig,
            {**settings.model_dump(), **classification, **common},
            source=f"classifiers.{name}",
        )
        for name, settings in experiment.classifiers.items()
    }
    labels = parse_config(
        LabelGenerationConfig,
        {
            **experiment.explanation.label_settings(),
            **{k: v for k, v in classification.items() if k in LabelInputs.model_fields},
            "dataset_options": {
                **data.classification.options,
                **experiment.explanation.reader_options,
            },
            **experiment.fusion.inputs(),
            "classifiers": [UPSTREAM] * len(experiment.explained_classifiers()),
            **common,
        },
        source="explanation",
    )
    pretrain_settings = experiment.pretrain.model_dump(exclude={"encoder_from"})
    pretrain = parse_config(
        PretrainConfig, {**pretrain_settings, "labels": UPSTREAM, **common}, source="pretrain"
    )
    inherited = {key: getattr(pretrain, key) for key in FinetuneSection.inherited()}
    if (encoder := segmentation_encoder(experiment, registry)) is not None:
        inherited["encoder"] = encoder
    own = experiment.finetune.model_dump(include=set(FinetuneSettings.model_fields))
    own = {
        k: v
        for k, v in own.items()
        if k in experiment.finetune.model_fields_set or k not in inherited
    }
    finetune = {}
    for task, init, budget, seed in finetune_grid(experiment):
        values = {**inherited, **own, **common}
        values |= {"data": sources.task_roots[task], **data.tasks[task].reader()}
        values |= {"init": init, "n_labeled": None if budget == "all" else budget, "seed": seed}
        values["init_path"] = None if init == "random" else UPSTREAM
        finetune[task, init, budget, seed] = parse_config(
            FinetuneConfig, values, source=f"finetune ({task})"
        )
    return StageConfigs(classifiers, labels, pretrain, finetune)


def finetune_grid(experiment: Experiment) -> list[tuple[str, str, int | str, int]]:
    """``(task, init, budget, seed)`` of every fine-tuning run, in the order they run."""
    grid = experiment.finetune
    return [
        (task, init, budget, seed)
        for task in experiment.finetune_tasks()
        for init in grid.inits
        for budget in grid.budgets
        for seed in grid.seeds
    ]


def segmentation_encoder(experiment: Experiment, registry: Registry) -> str | None:
    """The segmentation encoder every fine-tuning run builds (so that all inits compare
    the same architecture): ``pretrain.encoder``, else the counterpart of the classifier
    that starts it; ``None``: the fine-tuning default."""
    if experiment.pretrain.encoder is not None:
        return experiment.pretrain.encoder
    chosen = experiment.init_classifier()
    if chosen is None or chosen not in experiment.classifiers:
        return None
    settings = experiment.classifiers[chosen]
    try:
        return backbone_encoder(settings.backbone, settings.backbone_params, registry)
    except DollError:  # an unknown backbone or bad parameters: reported under its settings
        return None
