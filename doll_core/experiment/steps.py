"""One function per stage kind of ``doll run``: what each stage reads, the settings and
inputs its key covers (:func:`~doll_core.configuration.settings_key`), and the work it
does when no finished folder has that key (:class:`~doll_core.experiment.stages.StageCache`).

Stages and what their keys cover (settings as their fields declare):

=========================  =========================================================
phantom                    the phantom spec
classifier (one each)      its training settings, the classification data (and the
                           reader's label rules)
explain (one per           the explanation settings, the data, that classifier's
classifier)                stage
labels                     the fusion (``FusionChoice``), the explain stages fused;
                           explained together: the explanation settings, the data,
                           the classifiers' stages
evaluate                   the evaluation settings, the explainer's parameters, the
                           data, the classifiers' stages
pretrain                   its settings, the labels' stage, the encoder's classifier
finetune (one per run)     its settings (task, init, budget, seed among them), the
                           task's data, the init's source, the split
=========================  =========================================================

So a changed fine-tuning setting re-runs fine-tuning only, and an ablation over
explainers trains the classifiers once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from doll_core.configuration import settings_key
from doll_core.data.mapping import label_rules_key
from doll_core.digests import sha256_remembered
from doll_core.errors import DollError
from doll_core.experiment.config import DataSources
from doll_core.experiment.sections import PHANTOM_TASKS, Experiment
from doll_core.experiment.stages import StageCache, StageRecord
from doll_core.labels.config import FusionChoice, LabelGenerationConfig
from doll_core.phantom.labels import FindingsConfig
from doll_core.registry import Registry
from doll_core.segmentation.config import FinetuneConfig, PretrainConfig
from doll_core.segmentation.splits import TaskSplit, task_datasets
from doll_core.training.config import ClassifierTrainingConfig
from doll_core.training.loop import resolve_device

GENERATION = "generation.json"


@dataclass(frozen=True)
class Stages:
    """What every stage of one run shares: the stage cache, progress bars, the registry."""

    cache: StageCache
    progress: bool
    registry: Registry

    def options(self) -> dict[str, Any]:
        """The keyword arguments every stage function takes from the run."""
        return {"progress": self.progress, "registry": self.registry}


def data_sources(stages: Stages, experiment: Experiment) -> DataSources:
    """The data folders (the phantom stage's, when the experiment has one)."""
    data = experiment.data
    if data.phantom is None:
        assert data.classification.root is not None
        roots = {name: task.root for name, task in data.tasks.items() if task.root}
        paths = {"classification": data.classification.root, **roots}
        key = json.dumps({k: str(v.resolve()) for k, v in paths.items()}, sort_keys=True)
        return DataSources(key, data.classification.root, dict(roots), None)
    spec_values = data.phantom.model_dump()
    workers = spec_values.pop("workers")

    def work(folder: Path, resuming: bool) -> dict[str, Any]:
        from doll_core.phantom.writer import PhantomSpec, write_phantom

        values = dict(spec_values)
        findings = FindingsConfig(contrast=values.pop("finding_contrast"))
        spec = PhantomSpec(**values, findings=findings)
        manifest = write_phantom(folder / "phantom", spec, workers=workers, overwrite=resuming)
        return {key: manifest.get(key) for key in ("seconds", "images_per_second")}

    keyed = settings_key(data.phantom, "phantom")
    record = stages.cache.run("phantom", "phantom", keyed, {}, work, collective=False)
    root = record.folder / "phantom"
    tasks = {
        name: root / PHANTOM_TASKS[task.phantom]["folder"] if task.phantom else task.root
        for name, task in data.tasks.items()
    }
    classification = data.classification.root or root
    return DataSources(record.key, classification, cast(dict[str, Path], tasks), root)


def classifier_stage(
    stages: Stages, name: str, config: ClassifierTrainingConfig, data: str
) -> StageRecord:
    def work(folder: Path, resuming: bool) -> dict[str, Any]:
        from doll_core.training.classifier import package_classifier, train_classifier

        if not config.train:  # a given model (torchxrayvision's): validated, never trained
            result = package_classifier(config, folder, registry=stages.registry)
        else:
            result = train_classifier(config, folder, resume=resuming, **stages.options())
        return {
            "best_epoch": result.best_epoch,
            "mean_auroc": result.best_mean_auroc,
            "train_images_per_second": mean_rate(result.history),
        }

    key = settings_key(config, "classifier")
    inputs = {"data": data}
    factory = stages.registry.get("dataset", config.dataset).factory
    rules = label_rules_key(factory, config.dataset_options)
    if rules is not None:  # a dataset whose findings DoLL maps: the mapping's rules too
        inputs["label_rules"] = rules
    return stages.cache.run("classifier", name, key, inputs, work)


def explain_stage(
    stages: Stages, name: str, classifier: StageRecord, labels: LabelGenerationConfig, data: str
) -> StageRecord:
    """One classifier's labels, made with the default fusion (of one map: itself) and
    reused by every fusion of an ablation."""
    update = {"classifiers": (classifier.folder / "best.pt",), **FusionChoice().model_dump()}
    config = labels.model_copy(update=update)
    key = settings_key(config, "explain")
    inputs = {"data": data, "classifier": classifier.key}

    def work(folder: Path, resuming: bool) -> dict[str, Any]:
        from doll_core.labels.generate import generate_labels

        generate_labels(config, folder / "labels", resume=resuming, **stages.options())
        return cast(dict[str, Any], json.loads((folder / "labels" / GENERATION).read_text()))

    return stages.cache.run("explain", f"{config.explainer}-{name}", key, inputs, work)


def _lacking_outputs(
    experiment: Experiment, names: list[str], registry: Registry
) -> tuple[str, ...]:
    """The observations that the backbone of some of the classifiers ``names`` has no
    output for (what their checkpoints record as ``unavailable``), in DoLL's order: known
    from the settings, so a plan of the run (``doll doctor``) gives the same keys."""
    from doll_core.checkpoint import unavailable_outputs
    from doll_core.observations import OBSERVATIONS

    lacking = {
        observation
        for name in names
        for observation in unavailable_outputs(
            experiment.classifiers[name].backbone,
            experiment.classifiers[name].backbone_params,
            registry,
        )
    }
    return tuple(name for name in OBSERVATIONS if name in lacking)


def labels_stage(
    stages: Stages,
    experiment: Experiment,
    classifiers: dict[str, StageRecord],
    labels: LabelGenerationConfig,
    sources: DataSources,
) -> StageRecord:
    """The fused label store. Each classifier is explained in its own stage and the
    stores are fused after, unless targets come from the ensemble's predictions (then
    explanation and fusion run together, in one stage)."""
    names = experiment.explained_classifiers()
    paths = tuple(classifiers[n].folder / "best.pt" for n in names)
    config = labels.model_copy(update={"classifiers": paths})
    phantom = sources.phantom_root if experiment.report.localization else None
    label = f"{config.explainer}-{config.fusion}"
    if config.targets == "predicted":
        key = settings_key(config, "labels")
        inputs = {"data": sources.key, **{f"classifier:{n}": classifiers[n].key for n in names}}

        def joint(folder: Path, resuming: bool) -> dict[str, Any]:
            from doll_core.labels.generate import generate_labels

            store = folder / "labels"
            manifest = generate_labels(config, store, resume=resuming, **stages.options())
            return describe_store(store, manifest, {}, phantom)

        return stages.cache.run("labels", label, key, inputs, joint)
    lacking = _lacking_outputs(experiment, names, stages.registry)
    if lacking:  # what any classifier lacks is explained by none, so the stores fuse
        config = config.model_copy(update={"never_targets": lacking})
    explained = {n: explain_stage(stages, n, classifiers[n], config, sources.key) for n in names}

    def fuse(folder: Path, resuming: bool) -> dict[str, Any]:
        from doll_core.labels.combine import fuse_stores

        stores, store = [explained[n].folder / "labels" for n in names], folder / "labels"
        manifest = fuse_stores(
            stores,
            config.fusion,
            store,
            fusion_params=config.fusion_params,
            registry=stages.registry,
        )
        return describe_store(store, manifest, explained, phantom)

    key = settings_key(config, "labels", of=FusionChoice)
    inputs = {f"explain:{n}": explained[n].key for n in names}
    return stages.cache.run("labels", label, key, inputs, fuse, collective=False)


def evaluation_stage(
    stages: Stages,
    experiment: Experiment,
    classifiers: dict[str, StageRecord],
    labels: LabelGenerationConfig,
    sources: DataSources,
) -> StageRecord | None:
    """``[evaluation]``: the metrics of the experiment's explainer (with its parameters and
    engine) on each explained classifier, against the phantom's lesion masks; its folder
    holds the leaderboard. ``None`` when no metric is named."""
    settings = experiment.evaluation
    if not settings.metrics or sources.phantom_root is None:
        return None
    names = experiment.explained_classifiers()
    phantom = sources.phantom_root
    explainer = {labels.explainer: settings_key(labels, "evaluate")["explainer_params"]}
    key = {"evaluation": settings_key(settings, "evaluate"), "explainer": explainer}
    inputs = {"data": sources.key, **{f"classifier:{n}": classifiers[n].key for n in names}}

    def work(folder: Path, resuming: bool) -> dict[str, Any]:
        from doll_core.evaluation.leaderboard import leaderboard_summary
        from doll_core.evaluation.pipeline import images_source, run_evaluation

        outcome = run_evaluation(
            {name: classifiers[name].folder / "best.pt" for name in names},
            images_source(phantom, settings, stages.registry),
            {labels.explainer: dict(labels.explainer_params)},
            settings,
            folder,
            registry=stages.registry,
            device=resolve_device(labels.device),
            engine=labels.engine,
            header=lambda outcome: f"# Evaluation of {labels.explainer}",
        )
        return leaderboard_summary(outcome.board)

    label = labels.explainer
    return stages.cache.run("evaluate", label, key, inputs, work, collective=False)


def pretrain_stage(
    stages: Stages,
    experiment: Experiment,
    config: PretrainConfig,
    labels: StageRecord,
    classifiers: dict[str, StageRecord],
) -> StageRecord:
    source = experiment.pretrain.encoder_from
    inputs = {"labels": labels.key}
    update: dict[str, Any] = {"labels": labels.folder / "labels"}
    if source is not None:
        update["encoder_from"] = classifiers[source].folder / "best.pt"
        inputs[f"classifier:{source}"] = classifiers[source].key
    config = config.model_copy(update=update)

    def work(folder: Path, resuming: bool) -> dict[str, Any]:
        from doll_core.segmentation.pretrain import pretrain

        trainer = pretrain(config, folder, resume=resuming, **stages.options())
        metrics = json.loads((folder / "metrics.json").read_text())
        return {
            "best_epoch": trainer.best_epoch,
            "val_soft_dice": trainer.best_metric,
            "train_images_per_second": mean_rate(metrics.get("history", [])),
        }

    key = settings_key(config, "pretrain")
    return stages.cache.run("pretrain", config.head, key, inputs, work)


#: what a fine-tuning stage keeps of its run's result
FINETUNE_INFO = ("test", "best_epoch", "train_images", "curve")


def finetune_stage(
    stages: Stages,
    experiment: Experiment,
    run: tuple[str, str, int | str, int],
    config: FinetuneConfig,
    sources: DataSources,
    upstream: dict[str, StageRecord],
    split: TaskSplit | None,
) -> dict[str, Any]:
    """One fine-tuning run of the grid, as a row of the run's results; ``split`` is its
    task's (:func:`task_splits`)."""
    task, init, budget, seed = run
    root = sources.task_roots[task]
    phantom = experiment.data.tasks[task].phantom
    inputs = {"data": sources.key if phantom else str(root.resolve())}
    if init in ("classifier", "doll"):
        config = config.model_copy(update={"init_path": upstream[init].folder / "best.pt"})
        inputs[init] = upstream[init].key
    elif init == "checkpoint":
        checkpoint = experiment.finetune.checkpoint
        assert checkpoint is not None
        config = config.model_copy(update={"init_path": checkpoint})
        inputs["checkpoint"] = sha256_remembered(checkpoint)[:16]

    def work(folder: Path, resuming: bool) -> dict[str, Any]:
        from doll_core.segmentation.finetune import finetune

        result = finetune(config, folder, resume=resuming, **stages.options())
        return {key: result[key] for key in FINETUNE_INFO}

    # the split a file or patients make enters the inputs (for the splits added in 0.2,
    # so that earlier fine-tuning stages are reused)
    key = settings_key(config, "finetune")
    if config.splits in ("patients", "file"):
        inputs["split"] = split.digest() if split is not None else "(data not yet read)"
    record = stages.cache.run("finetune", f"{task}-{init}-n{budget}-seed{seed}", key, inputs, work)
    test = record.info["test"]  # every rank has it (test.json is written by rank 0)
    return {
        "task": task,
        "init": init,
        "budget": budget,
        "seed": seed,
        "test_miou": test["miou"],
        "test_mdice": test["mdice"],
        "test_iou": test.get("iou", {}),
        "test_dice": test.get("dice", {}),
        "test_per_image": test.get("per_image"),
        "train_images": record.info["train_images"],
        "curve": record.info["curve"],
        "seconds": record.seconds,
        "folder": str(record.folder),
    }


def task_splits(
    runs: dict[tuple[str, str, int | str, int], FinetuneConfig],
    registry: Registry,
    *,
    planning: bool = False,
) -> dict[str, TaskSplit | None]:
    """Each task's split (every run of a task splits it alike), checked before any stage
    reads data: a patient in two splits, or a budget larger than the training split, is a
    :class:`DollError` naming the task. ``planning``: a task whose data cannot be read yet
    (a phantom not yet written) has no split (``None``) instead of an error."""
    splits: dict[str, TaskSplit | None] = {}
    for (task, _, budget, _), config in runs.items():
        if task not in splits:
            try:
                splits[task] = task_datasets(config, registry)[1]
            except DollError as exc:
                if not planning:
                    raise DollError(f"task {task!r}: {exc}") from None
                splits[task] = None
        found = splits[task]
        if found is None:
            continue
        size = found.sizes()["train"]
        if isinstance(budget, int) and budget > size:
            raise DollError(
                f"task {task!r}: budget {budget} is larger than its training split of {size} "
                f"images ({found.how}); lower finetune.budgets or change the split"
            )
    return splits


#: what a run's results keep of each explanation stage's ``generation.json``
EXPLAIN_FIELDS = ("images_per_second", "data_wait_fraction", "workers", "device", "explainer")


def describe_store(
    store: Path,
    manifest: dict[str, Any],
    explained: dict[str, StageRecord],
    phantom: Path | None,
) -> dict[str, Any]:
    """Summary of a finished label store (``manifest``: the one its writer returned) for a
    run's results: its size and speed (over the per-classifier ``explained`` stages it was
    fused from, or its own generation when there are none) and, with a ``phantom``, its
    localization against the true masks."""
    from doll_core.labels.scoring import score_store

    generation = json.loads((store / GENERATION).read_text())
    stages = {n: r.info for n, r in explained.items()} or {"joint": generation}
    labelled = max((int(g.get("images_this_run") or 0) for g in stages.values()), default=0)
    seconds = sum(float(r.info.get("seconds") or 0) for r in explained.values())
    seconds += float(generation.get("seconds") or 0)
    info: dict[str, Any] = {
        "images": len(manifest["images"]),
        "seconds": round(seconds, 2),
        "images_per_second": round(labelled / seconds, 2) if seconds else None,
        "bytes_per_image": generation.get("bytes_per_image"),
        # per explanation stage: speed, data waiting, autocast error, compile time
        "explain": {n: {key: g.get(key) for key in EXPLAIN_FIELDS} for n, g in stages.items()},
    }
    if phantom is not None:
        info["localization"] = score_store(store, phantom)
    return info


def mean_rate(history: list[dict[str, Any]]) -> float | None:
    """The mean of the epochs' ``train_images_per_second`` (``None``: none recorded)."""
    rates = [e["train_images_per_second"] for e in history if e.get("train_images_per_second")]
    return sum(rates) / len(rates) if rates else None
