"""``doll run``: every stage of an experiment in order, each reused when its key exists
(what each stage's key covers: :mod:`doll_core.experiment.steps`)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from doll_core._version import __version__
from doll_core.atomic import atomic_write_text, remove_temporaries
from doll_core.data.dicom import dicom_environment
from doll_core.experiment.config import stage_configs
from doll_core.experiment.results_file import write_results
from doll_core.experiment.sections import Experiment
from doll_core.experiment.stages import StageCache, StageRecord, write_run_record
from doll_core.experiment.steps import (
    Stages,
    classifier_stage,
    data_sources,
    evaluation_stage,
    finetune_stage,
    labels_stage,
    pretrain_stage,
    task_splits,
)
from doll_core.home import expand_home
from doll_core.links import append_line
from doll_core.locking import folder_lock
from doll_core.registry import Registry, get_registry
from doll_core.relocation import relocatable_within
from doll_core.segmentation.compare import paired_comparisons, summarise_runs
from doll_core.training.distributed import held_process_group, launched_local_rank, launched_rank
from doll_core.training.loop import resolve_device


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
        append_line(self.path, f"{stamp}  {line}\n")
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
    info["dicom"] = dicom_environment()  # DICOM pixel values depend on the decoder
    return info


def run_stages(
    experiment: Experiment,
    cache: StageCache,
    *,
    device: str,
    progress: bool = False,
    registry: Registry | None = None,
    image_cache: Path | None = None,
    checked: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Every stage of ``experiment`` in order, through ``cache``; each stage's
    configuration comes from :func:`~doll_core.experiment.config.stage_configs`, with the
    paths of the upstream stages it reads filled in. ``image_cache``: the folder of
    decoded images the stages share (``None``: none). ``checked`` is called once every
    check before work has passed (settings, plugins, splits, budgets), before the first
    classifier stage. :returns: the run's results."""
    stages = Stages(cache, progress, registry or get_registry())
    sources = data_sources(stages, experiment)
    configs = stage_configs(
        experiment, sources, device=device, registry=stages.registry, image_cache=image_cache
    )
    splits = task_splits(configs.finetune, stages.registry, planning=cache.planning)
    if checked is not None:
        checked()
    classifiers = {
        name: classifier_stage(stages, name, config, sources.key)
        for name, config in configs.classifiers.items()
    }
    labels = None
    upstream: dict[str, StageRecord] = {}
    if "doll" in experiment.finetune.inits:
        labels = labels_stage(stages, experiment, classifiers, configs.labels, sources)
        upstream["doll"] = pretrain_stage(stages, experiment, configs.pretrain, labels, classifiers)
    evaluated = evaluation_stage(stages, experiment, classifiers, configs.labels, sources)
    chosen = experiment.init_classifier()
    if "classifier" in experiment.finetune.inits and chosen is not None:
        upstream["classifier"] = classifiers[chosen]
    runs = [
        finetune_stage(stages, experiment, run, config, sources, upstream, splits[run[0]])
        for run, config in configs.finetune.items()
    ]
    return {
        "experiment": experiment.name,
        "classifiers": {n: r.info for n, r in classifiers.items()},
        "init_classifier": chosen,
        "labels": labels.info if labels is not None else None,
        "labels_folder": str(labels.folder / "labels") if labels is not None else None,
        "phantom": str(sources.phantom_root) if sources.phantom_root else None,
        "pretrain": upstream["doll"].info if "doll" in upstream else None,
        "evaluation": evaluated.info if evaluated is not None else None,
        "evaluation_folder": str(evaluated.folder) if evaluated is not None else None,
        "finetune": {
            "runs": runs,
            "summary": summarise_runs(runs, ("task", "init", "budget")),
            "comparisons": paired_comparisons(runs, ("task", "budget")),
        },
        "splits": {task: split.summary() for task, split in splits.items() if split},
        "stages": [record.to_dict() for record in cache.records],
        "stage_seconds": stage_seconds(cache.records),
    }


def stage_seconds(records: list[StageRecord]) -> dict[str, float]:
    """Seconds each stage kind took when it was computed (reused stages count the time
    they took then), summed over its folders."""
    totals: dict[str, float] = {}
    for record in records:
        totals[record.kind] = round(totals.get(record.kind, 0.0) + record.seconds, 2)
    return totals


#: the environment variable that moves the decoded-image cache (a folder) or turns it off
#: (``off``); by default it lies beside the stage folder (``RUN/image-cache``)
IMAGE_CACHE_ENV = "DOLL_IMAGE_CACHE"


def image_cache_folder(stages: Path) -> Path | None:
    """Where the stages of a run keep decoded images (:mod:`doll_core.data.decoded`):
    ``$DOLL_IMAGE_CACHE`` if set (``off``: nowhere), else ``image-cache`` beside the stage
    folder, so that an ablation's points share one."""
    value = os.environ.get(IMAGE_CACHE_ENV)
    if value is None:
        return stages.parent / "image-cache"
    if value.strip().lower() in ("", "off", "0", "false", "no", "none"):
        return None
    return expand_home(value, IMAGE_CACHE_ENV)


def clear_half_written_images(image_cache: Path | None, owner: Path) -> None:
    """Remove the half-written entries a killed run left in ``image_cache`` (see
    :func:`image_cache_folder`), on rank 0 and only where the cache lies inside ``owner``:
    the folder this process has locked (a cache elsewhere may be another run's)."""
    if launched_rank() == 0 and image_cache is not None and image_cache.is_relative_to(owner):
        remove_temporaries(image_cache)


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
    :raises DollError: when another process works in ``out`` (or in ``stages``).
    """
    from doll_core.experiment.report import write_report

    out = Path(out).absolute()
    stages = Path(stages).absolute() if stages is not None else out / "stages"
    with ExitStack() as held:
        held.enter_context(folder_lock(out))
        # locked even inside the run folder: another run may name it with --stages
        held.enter_context(folder_lock(stages, "stage folder"))
        held.enter_context(relocatable_within(out, stages))
        main = launched_rank() == 0
        image_cache = image_cache_folder(stages)
        clear_half_written_images(image_cache, out)
        device = device or experiment.device
        log = RunLog(out / "log.txt", echo)
        cache = StageCache(stages, resume=resume, log=log)
        started = time.perf_counter()

        def record_the_run() -> None:  # only once every check passed: a refused run changes
            if main:  # nothing (a changed experiment.json would misname the finished stages)
                atomic_write_text(out / "experiment.json", json.dumps(document, indent=2) + "\n")
                write_run_record(out, device=device)
            log(f"doll run {experiment.name}: {out} (device {device})")

        with held_process_group(resolve_device(device, local_rank=launched_local_rank())):
            results = run_stages(
                experiment,
                cache,
                device=device,
                progress=progress,
                registry=registry,
                image_cache=image_cache,
                checked=record_the_run,
            )
        results["environment"] = environment(device)
        results["seconds"] = round(time.perf_counter() - started, 2)
        results["computed"] = dict(cache.computed)
        if main:
            write_results(out, results)
            write_report(out, results, document)
        log(
            f"finished in {results['seconds']:.1f} s; stages computed: "
            f"{sum(cache.computed.values())}, reused: "
            f"{sum(r.reused for r in cache.records)}"
        )
        return results
