"""``doll run``: every stage of an experiment in order, each reused when its key exists.

Stages and what their keys cover:

======================  ===========================================================
phantom                 the phantom spec
classifier (one each)   its training settings, the classification data
labels                  explanation + fusion settings, the explained classifiers
pretrain                its settings, the labels, the encoder's classifier
finetune (one per run)  its settings, task, init, budget, seed, the init's source
======================  ===========================================================

So a changed fine-tuning setting re-runs fine-tuning only, and an ablation over
explainers trains the classifiers once.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from doll_core._version import __version__
from doll_core.atomic import atomic_write_text
from doll_core.configuration import parse_config
from doll_core.digests import sha256_of
from doll_core.experiment.config import PHANTOM_TASKS, Experiment
from doll_core.experiment.stages import StageCache, StageRecord, write_run_record
from doll_core.labels.config import LabelGenerationConfig
from doll_core.registry import Registry, get_registry
from doll_core.segmentation.compare import summarise_runs
from doll_core.segmentation.config import FinetuneConfig, PretrainConfig
from doll_core.training.config import ClassifierTrainingConfig
from doll_core.training.distributed import (
    held_process_group,
    launched_local_rank,
    launched_rank,
)
from doll_core.training.loop import resolve_device

RESULTS = "results.json"


@dataclass
class DataSources:
    """Where the stages read their data, and the key that stands for it."""

    key: str
    classification_root: Path
    task_roots: dict[str, Path]
    phantom_root: Path | None


class RunLog:
    """Timestamped lines to ``log.txt`` in the run folder (and to ``echo``)."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.echo = echo
        self.enabled = launched_rank() == 0  # under torchrun, rank 0 speaks for all

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{stamp}  {line}\n")
        if self.echo is not None:
            self.echo(line)


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware a run records."""

    resolved = resolve_device(device)
    info: dict[str, Any] = {
        "doll": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(resolved),
        "cpu_threads": torch.get_num_threads(),
    }
    if resolved.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(resolved)
    for package in ("torchvision", "captum", "zennit", "segmentation_models_pytorch"):
        try:
            info[package] = __import__(package).__version__
        except Exception:  # a missing optional package is just not listed
            continue
    return info


#: what a run's results keep of each explanation stage's ``generation.json``
EXPLAIN_FIELDS = ("images_per_second", "data_wait_fraction", "workers", "device", "explainer")


class ExperimentRunner:
    """Runs one experiment into ``out`` with stage folders under ``stages``."""

    def __init__(
        self,
        experiment: Experiment,
        cache: StageCache,
        *,
        device: str,
        progress: bool = False,
        registry: Registry | None = None,
    ) -> None:
        self.experiment = experiment
        self.cache = cache
        self.device = device
        self.progress = progress
        self.registry = registry or get_registry()

    # -- stages --------------------------------------------------------------------------

    def data(self) -> DataSources:
        data = self.experiment.data
        if data.phantom is None:
            assert data.classification.root is not None
            roots = {name: task.root for name, task in data.tasks.items() if task.root}
            key = json.dumps(
                {
                    "classification": str(data.classification.root.resolve()),
                    **{k: str(v.resolve()) for k, v in roots.items()},
                },
                sort_keys=True,
            )
            return DataSources(key, data.classification.root, dict(roots), None)
        spec_values = data.phantom.model_dump()
        workers = spec_values.pop("workers")

        def work(folder: Path, resuming: bool) -> dict[str, Any]:
            from doll_core.phantom.writer import PhantomSpec, write_phantom

            manifest = write_phantom(
                folder / "phantom", PhantomSpec(**spec_values), workers=workers, overwrite=resuming
            )
            return {
                "seconds": manifest.get("seconds"),
                "images_per_second": manifest.get("images_per_second"),
            }

        record = self.cache.run("phantom", "phantom", spec_values, {}, work, collective=False)
        root = record.folder / "phantom"
        tasks = {}
        for name, task in data.tasks.items():
            if task.phantom is not None:
                tasks[name] = root / PHANTOM_TASKS[task.phantom]["folder"]
            else:
                assert task.root is not None
                tasks[name] = task.root
        classification = data.classification.root or root
        return DataSources(record.key, classification, tasks, root)

    def classifier(self, name: str, sources: DataSources) -> StageRecord:
        data = self.experiment.data.classification
        settings = {
            **self.experiment.classifier_settings(name),
            "dataset": data.dataset,
            "dataset_options": data.options,
            "train_split": data.train_split,
            "val_split": data.val_split,
            "device": self.device,
        }
        config = parse_config(
            ClassifierTrainingConfig,
            {**settings, "data": sources.classification_root},
            source=f"classifiers.{name}",
        )
        key_settings = config.model_dump(mode="json", exclude={"data"})

        def work(folder: Path, resuming: bool) -> dict[str, Any]:
            from doll_core.training.classifier import train_classifier

            result = train_classifier(
                config, folder, resume=resuming, progress=self.progress, registry=self.registry
            )
            rates = [
                e["train_images_per_second"]
                for e in result.history
                if e.get("train_images_per_second")
            ]
            return {
                "best_epoch": result.best_epoch,
                "mean_auroc": result.best_mean_auroc,
                "train_images_per_second": sum(rates) / len(rates) if rates else None,
            }

        return self.cache.run("classifier", name, key_settings, {"data": sources.key}, work)

    def _label_config(
        self,
        classifier_paths: list[Path],
        sources: DataSources,
        fusion: str,
        fusion_params: dict[str, Any],
    ) -> LabelGenerationConfig:
        data = self.experiment.data.classification
        return parse_config(
            LabelGenerationConfig,
            {
                **self.experiment.explanation_settings(),
                "data": sources.classification_root,
                "dataset": data.dataset,
                "dataset_options": data.options,
                "classifiers": classifier_paths,
                "fusion": fusion,
                "fusion_params": fusion_params,
                "device": self.device,
            },
            source="explanation",
        )

    def explain(self, name: str, classifier: StageRecord, sources: DataSources) -> StageRecord:
        """One classifier's labels (no fusion), reused by every fusion of an ablation."""
        config = self._label_config([classifier.folder / "best.pt"], sources, "mean", {})
        key_settings = config.result_settings(
            exclude={"data", "classifiers", "fusion", "fusion_params"}
        )
        inputs = {"data": sources.key, "classifier": classifier.key}

        def work(folder: Path, resuming: bool) -> dict[str, Any]:
            from doll_core.labels.generate import generate_labels

            generate_labels(
                config,
                folder / "labels",
                resume=resuming,
                progress=self.progress,
                registry=self.registry,
            )
            return json.loads((folder / "labels" / "generation.json").read_text())

        return self.cache.run("explain", f"{config.explainer}-{name}", key_settings, inputs, work)

    def labels(self, classifiers: dict[str, StageRecord], sources: DataSources) -> StageRecord:
        """The fused label store. Each classifier is explained in its own stage and the
        stores are fused after, unless targets come from the ensemble's predictions
        (then explanation and fusion run together, in one stage)."""
        experiment = self.experiment
        names = experiment.explained_classifiers()
        fusion, params = experiment.fusion.name, experiment.fusion.params
        config = self._label_config(
            [classifiers[n].folder / "best.pt" for n in names], sources, fusion, params
        )
        phantom = sources.phantom_root if experiment.report.localization else None
        label = f"{config.explainer}-{fusion}"
        split = config.targets != "predicted"
        explained = {n: self.explain(n, classifiers[n], sources) for n in names} if split else {}

        def describe(store: Path, manifest: dict[str, Any], labelled: int | None) -> dict[str, Any]:
            """Summary of a finished store; ``labelled``: images each classifier labelled
            (``None``: read from the store's ``generation.json``)."""
            from doll_core.labels.scoring import score_store

            generation = json.loads((store / "generation.json").read_text())
            if labelled is None:
                labelled = int(generation.get("images_this_run") or 0)
            seconds = sum(float(r.info.get("seconds") or 0) for r in explained.values())
            seconds += float(generation.get("seconds") or 0)
            info: dict[str, Any] = {
                "images": len(manifest["images"]),
                "seconds": round(seconds, 2),
                "images_per_second": round(labelled / seconds, 2) if seconds else None,
                "bytes_per_image": generation.get("bytes_per_image"),
                # per explanation stage: speed, data waiting, autocast error, compile time
                "explain": {
                    n: {key: g.get(key) for key in EXPLAIN_FIELDS}
                    for n, g in (
                        {n: r.info for n, r in explained.items()} or {"joint": generation}
                    ).items()
                },
            }
            if phantom is not None:
                info["localization"] = score_store(store, phantom)
            return info

        if split:
            key_settings = {"fusion": fusion, "fusion_params": params}
            inputs = {f"explain:{n}": explained[n].key for n in names}

            def work(folder: Path, resuming: bool) -> dict[str, Any]:
                from doll_core.labels.combine import fuse_stores

                store = folder / "labels"
                manifest = fuse_stores(
                    [explained[n].folder / "labels" for n in names],
                    fusion,
                    store,
                    fusion_params=params,
                    registry=self.registry,
                )
                return describe(store, manifest, _explained_images(explained))
        else:
            key_settings = config.result_settings(exclude={"data", "classifiers"})
            inputs = {"data": sources.key, **{f"classifier:{n}": classifiers[n].key for n in names}}

            def work(folder: Path, resuming: bool) -> dict[str, Any]:
                from doll_core.labels.generate import generate_labels

                store = folder / "labels"
                manifest = generate_labels(
                    config, store, resume=resuming, progress=self.progress, registry=self.registry
                )
                return describe(store, manifest, None)

        return self.cache.run("labels", label, key_settings, inputs, work, collective=not split)

    def encoder_name(self) -> str | None:
        """The segmentation encoder every fine-tuning run builds (so all inits compare
        the same architecture)."""
        chosen = self.experiment.init_classifier()
        settings = self.experiment.pretrain_settings()
        if "encoder" in settings:
            return str(settings["encoder"])
        if chosen is not None:
            backbone = self.experiment.classifier_settings(chosen).get("backbone", "tiny_cnn")
            return self.registry.get("backbone", backbone).metadata.get("encoder_name")
        return None

    def pretrain(self, labels: StageRecord, classifiers: dict[str, StageRecord]) -> StageRecord:
        experiment = self.experiment
        source = experiment.pretrain.encoder_from
        values: dict[str, Any] = {
            **experiment.pretrain_settings(),
            "labels": labels.folder / "labels",
            "device": self.device,
        }
        inputs = {"labels": labels.key}
        if source is not None:
            values["encoder_from"] = classifiers[source].folder / "best.pt"
            inputs[f"classifier:{source}"] = classifiers[source].key
        config = parse_config(PretrainConfig, values, source="pretrain")
        key_settings = config.model_dump(mode="json", exclude={"labels", "encoder_from", "data"})

        def work(folder: Path, resuming: bool) -> dict[str, Any]:
            from doll_core.segmentation.pretrain import pretrain

            trainer = pretrain(
                config, folder, resume=resuming, progress=self.progress, registry=self.registry
            )
            metrics = json.loads((folder / "metrics.json").read_text())
            rates = [
                e["train_images_per_second"]
                for e in metrics.get("history", [])
                if e.get("train_images_per_second")
            ]
            return {
                "best_epoch": trainer.best_epoch,
                "val_soft_dice": trainer.best_metric,
                "train_images_per_second": sum(rates) / len(rates) if rates else None,
            }

        return self.cache.run("pretrain", config.head, key_settings, inputs, work)

    def finetune(
        self,
        task: str,
        init: str,
        budget: int | str,
        seed: int,
        sources: DataSources,
        upstream: dict[str, StageRecord],
    ) -> dict[str, Any]:
        experiment = self.experiment
        dataset, splits = experiment.data.tasks[task].reader()
        values: dict[str, Any] = {
            "head": experiment.pretrain_settings().get("head", "unet"),
            **({"encoder": encoder} if (encoder := self.encoder_name()) else {}),
            "image_size": experiment.pretrain_settings().get("image_size", 128),
            **experiment.finetune_settings(),
            "data": sources.task_roots[task],
            "dataset": dataset,
            "dataset_options": experiment.data.tasks[task].options,
            "splits": splits,
            "init": init,
            "n_labeled": None if budget == "all" else budget,
            "seed": seed,
            "device": self.device,
        }
        inputs = {
            "data": sources.key
            if experiment.data.tasks[task].phantom
            else str(sources.task_roots[task].resolve())
        }
        if init in ("classifier", "doll"):
            source = upstream[init]
            values["init_path"] = source.folder / "best.pt"
            inputs[init] = source.key
        elif init == "checkpoint":
            assert experiment.finetune.checkpoint is not None
            values["init_path"] = experiment.finetune.checkpoint
            inputs["checkpoint"] = _file_digest(experiment.finetune.checkpoint)
        config = parse_config(FinetuneConfig, values, source=f"finetune ({task})")
        key_settings = config.model_dump(mode="json", exclude={"data", "init_path"})

        def work(folder: Path, resuming: bool) -> dict[str, Any]:
            from doll_core.segmentation.finetune import finetune

            result = finetune(
                config, folder, resume=resuming, progress=self.progress, registry=self.registry
            )
            keep = ("test", "best_epoch", "train_images", "curve")
            return {key: result[key] for key in keep}

        label = f"{task}-{init}-n{budget}-seed{seed}"
        record = self.cache.run("finetune", label, key_settings, inputs, work)
        result = record.info  # every rank has it (test.json is written by rank 0)
        return {
            "task": task,
            "init": init,
            "budget": budget,
            "seed": seed,
            "test_miou": result["test"]["miou"],
            "test_mdice": result["test"]["mdice"],
            "test_iou": result["test"].get("iou", {}),
            "test_dice": result["test"].get("dice", {}),
            "train_images": result["train_images"],
            "curve": result["curve"],
            "seconds": record.seconds,
            "folder": str(record.folder),
        }

    # -- the whole experiment ------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        experiment = self.experiment
        sources = self.data()
        classifiers = {name: self.classifier(name, sources) for name in experiment.classifiers}
        finetune = experiment.finetune
        needs_labels = "doll" in finetune.inits
        labels = self.labels(classifiers, sources) if needs_labels else None
        upstream: dict[str, StageRecord] = {}
        if labels is not None:
            upstream["doll"] = self.pretrain(labels, classifiers)
        chosen = experiment.init_classifier()
        if "classifier" in finetune.inits and chosen is not None:
            upstream["classifier"] = classifiers[chosen]
        runs = [
            self.finetune(task, init, budget, seed, sources, upstream)
            for task in experiment.finetune_tasks()
            for init in finetune.inits
            for budget in finetune.budgets
            for seed in finetune.seeds
        ]
        return {
            "experiment": experiment.name,
            "classifiers": {n: r.info for n, r in classifiers.items()},
            "labels": labels.info if labels is not None else None,
            "labels_folder": str(labels.folder / "labels") if labels is not None else None,
            "phantom": str(sources.phantom_root) if sources.phantom_root else None,
            "pretrain": upstream["doll"].info if "doll" in upstream else None,
            "finetune": {
                "runs": runs,
                "summary": summarise_runs(runs, ("task", "init", "budget")),
            },
            "stages": [record.to_dict() for record in self.cache.records],
            "stage_seconds": stage_seconds(self.cache.records),
        }


def _explained_images(explained: dict[str, StageRecord]) -> int:
    """Images per classifier store (they all label the same images)."""
    counts = [int(r.info.get("images_this_run") or 0) for r in explained.values()]
    return max(counts, default=0)


def stage_seconds(records: list[StageRecord]) -> dict[str, float]:
    """Seconds each stage kind took when it was computed (reused stages count the time
    they took then), summed over its folders."""
    totals: dict[str, float] = {}
    for record in records:
        totals[record.kind] = round(totals.get(record.kind, 0.0) + record.seconds, 2)
    return totals


def _file_digest(path: Path) -> str:
    return sha256_of(path)[:16]


def run_experiment(
    experiment: Experiment,
    document: dict[str, Any],
    out: str | Path,
    *,
    stages: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Run ``experiment`` into the run folder ``out`` and write its report there.

    :param document: the resolved experiment (saved as ``experiment.json``).
    :param stages: where stage folders live (default ``out/stages``; an ablation shares
        one between its grid points).
    :param resume: continue interrupted stages instead of refusing them.
    :param device: overrides the experiment's ``device``.
    :returns: the results (also in ``out/results.json``).
    """
    from doll_core.experiment.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or experiment.device
    log = RunLog(out / "log.txt", echo)
    cache = StageCache(stages or out / "stages", resume=resume, log=log)
    main = launched_rank() == 0
    if main:
        atomic_write_text(out / "experiment.json", json.dumps(document, indent=2) + "\n")
        write_run_record(out, device=device)
    started = time.perf_counter()
    log(f"doll run {experiment.name}: {out} (device {device})")
    runner = ExperimentRunner(
        experiment, cache, device=device, progress=progress, registry=registry
    )
    with held_process_group(resolve_device(device, local_rank=launched_local_rank())):
        results = runner.run()
    results["environment"] = environment(device)
    results["seconds"] = round(time.perf_counter() - started, 2)
    results["computed"] = dict(cache.computed)
    if main:
        atomic_write_text(out / RESULTS, json.dumps(results, indent=2, default=str) + "\n")
        write_report(out, results, document)
    log(
        f"finished in {results['seconds']:.1f} s; stages computed: "
        f"{sum(cache.computed.values())}, reused: "
        f"{sum(r.reused for r in cache.records)}"
    )
    return results
