"""The label-generation stage: dataset -> targets -> every classifier x the explainer ->
post-processing -> fusion -> label store.

One pass over the data, shard by shard; each batch is explained by all classifiers
before the next is read. Under ``torchrun``, rank ``r`` makes the shards ``k`` with
``k % world_size == r`` and rank 0 writes the manifest. A run killed at any moment and
restarted with ``resume=True`` recomputes only the shards that are missing or do not verify
(:func:`~doll_core.labels.store.check_store`), and ends with the same bytes in every shard.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional
from torch.utils.data import DataLoader

from doll_core.atomic import atomic_write_text
from doll_core.attribution.api import check_attributions, create_explainer
from doll_core.attribution.postprocess import postprocess
from doll_core.attribution.targets import select_targets
from doll_core.checkpoint import ClassifierMeta, load_classifier
from doll_core.data.decoded import attach_image_cache
from doll_core.data.samples import SkippedSample, batches_from
from doll_core.errors import DollError
from doll_core.home import expand_home
from doll_core.interfaces import optional_member
from doll_core.labels.completeness import (
    completeness_sums,
    with_store_completeness,
    write_shard_completeness,
)
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.fusion import fuse_maps, validation_auroc
from doll_core.labels.store import (
    CLASSIFIER_AUROC,
    CONFIG,
    ShardContent,
    build_manifest,
    check_store,
    map_statistics,
    read_store_config,
    shard_path,
    write_manifest,
    write_shard,
)
from doll_core.links import refuse_links_leaving
from doll_core.models import Classifier
from doll_core.observations import OBSERVATIONS
from doll_core.progress import progress_bar
from doll_core.registry import Registry, get_registry
from doll_core.relocation import config_record
from doll_core.training.distributed import (
    DistributedContext,
    cleanup_distributed,
    launched_local_rank,
    setup_distributed,
)
from doll_core.training.loop import resolve_device

BatchCallback = Callable[[int, int], None]
#: ``data_seconds`` (waiting for batches) and ``compute_seconds`` (labelling them) of a run.
Timing = dict[str, float]


def _resume_point(store: Path, context: DistributedContext) -> set[int]:
    """The shards of ``store`` a resume keeps: those :func:`check_store` verifies (as an
    unfinished store, so a shard the manifest does not list is kept when it loads with this
    config's hash). Each rank deletes the files of the other shards ``0 .. total - 1`` it
    makes (corrupted or foreign: made again, never read), never another rank's, which that
    rank may have made again already; files numbered beyond are not shards of this store
    and are left alone (``doll doctor`` reports them)."""
    check = check_store(store, finished=False)
    for index in range(check.total or 0):
        if index not in check.valid and index % context.world_size == context.rank:
            shard_path(store, index).unlink(missing_ok=True)
    return check.valid


def _load_classifiers(
    config: LabelGenerationConfig, registry: Registry, device: torch.device
) -> tuple[list[Classifier], list[ClassifierMeta], int]:
    """The store's classifiers on ``device``, their metadata, and the input channels they
    all take."""
    loaded = [load_classifier(p, device=device, registry=registry) for p in config.classifiers]
    metas = [meta for _, meta in loaded]
    channels = {meta.in_channels for meta in metas}
    if len(channels) != 1:
        raise DollError("all classifiers of a label store must take the same input channels")
    return [model for model, _ in loaded], metas, channels.pop()


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images [B, C, H, W]`` at ``size x size`` (antialiased bilinear), or as they are."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def _targets(
    config: LabelGenerationConfig,
    labels: torch.Tensor,
    mask: torch.Tensor,
    probabilities: torch.Tensor,
) -> torch.Tensor:
    """``long [B, T]`` targets from ``labels``/``mask [B, 14]`` or the ensemble's
    ``probabilities [B, 14]``, as ``config.targets`` says."""
    if config.targets == "positive":
        return select_targets("positive", labels=labels, label_mask=mask)
    if config.targets == "predicted":
        return select_targets("predicted", probabilities=probabilities, threshold=config.threshold)
    return select_targets("all", labels=labels)


def _area_resized(soft: torch.Tensor, size: int) -> torch.Tensor:
    """Maps ``[B, T, H, W]`` at ``[B, T, size, size]`` (area averaging), or as they are."""
    if soft.shape[-1] == size:
        return soft
    b, t = soft.shape[:2]
    resized = functional.interpolate(
        soft.view(b * t, 1, *soft.shape[-2:]), size=(size, size), mode="area"
    )
    return resized.view(b, t, size, size)


class _Labeller:
    """The classifiers with the explainer and the fusion: a batch of images -> targets and
    fused uint8 maps."""

    def __init__(
        self,
        config: LabelGenerationConfig,
        registry: Registry,
        models: list[Classifier],
        metas: list[ClassifierMeta],
        label_size: int,
        device: torch.device,
    ) -> None:
        self.config, self.models, self.metas = config, models, metas
        self.label_size, self.device = label_size, device
        self.explainer = create_explainer(
            config.explainer, config.explainer_params, config.engine, registry=registry
        )
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            if config.engine.channels_last:
                for model in models:
                    model.to(memory_format=torch.channels_last)
        self.fusion = registry.create("fusion", config.fusion, **config.fusion_params)
        self.auroc = validation_auroc([meta.val_auroc for meta in metas])  # [N_clf, 14]
        #: bool [14]: observations never a target: those some classifier has no output
        #: for, and the config's ``never_targets``
        never = set(config.never_targets)
        self.unavailable = torch.tensor(
            [name in never or any(name in m.unavailable for m in metas) for name in OBSERVATIONS]
        )

    def label_batch(
        self, images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """``images [B, C, H, W]``, ``labels``/``mask [B, 14]`` -> targets ``[B, T]``,
        fused uint8 maps ``[B, T, R, R]``, and the numbers of maps zeroed for NaN/Inf and
        for having no signal."""
        images = images.to(self.device)
        resized = [_resized(images, meta.image_size) for meta in self.metas]
        with torch.no_grad():
            probabilities = [
                torch.sigmoid(model(x).float()).cpu()
                for model, x in zip(self.models, resized, strict=True)
            ]
        targets = _targets(self.config, labels, mask, torch.stack(probabilities).mean(dim=0))
        targets = targets.masked_fill(self.unavailable[targets.clamp(min=0)], -1)
        per_classifier = []
        nonfinite = no_signal = 0
        for model, x, probs in zip(self.models, resized, probabilities, strict=True):
            soft, bad, empty = self.soft_maps(model, x, probs, targets)
            per_classifier.append(soft)
            nonfinite, no_signal = nonfinite + bad, no_signal + empty
        weights = self.auroc[:, targets.clamp(min=0)]  # [N_clf, B, T]
        fused = fuse_maps(self.fusion, self.config.fusion, torch.stack(per_classifier), weights)
        fused = fused * (targets >= 0)[:, :, None, None]
        return targets, torch.round(fused * 255).to(torch.uint8), nonfinite, no_signal

    def soft_maps(
        self, model: Classifier, x: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, int, int]:
        """One classifier's post-processed maps ``[B, T, R, R]`` in [0, 1] of ``x [B, C, S,
        S]`` (its input size) for ``targets [B, T]``, given its ``probs [B, 14]``; and the
        numbers of maps zeroed for NaN/Inf and for having no signal."""
        device_targets = targets.to(self.device)
        raw, nonfinite = check_attributions(
            self.explainer.attribute(model, x, device_targets),
            x,
            device_targets,
            self.config.explainer,
        )
        gathered = probs.gather(1, targets.clamp(min=0)) * (targets >= 0)
        post = postprocess(
            raw.cpu(), self.config.postprocess, targets=targets, probabilities=gathered
        )
        soft = _area_resized(post.soft, self.label_size)
        return soft.clamp(0, 1), nonfinite, post.no_signal

    def performance(self) -> dict[str, Any] | None:
        """The explainer's own report (autocast error, compile time), when it keeps one."""
        report = optional_member(self.explainer, "explainer", "performance_report")
        return report() if callable(report) else None


@dataclass
class _ShardRows:
    """The rows of one shard, gathered batch by batch (see :class:`ShardContent`)."""

    label_size: int
    ids: list[str] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)
    maps: list[torch.Tensor] = field(default_factory=list)
    stats: list[torch.Tensor] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])
    skipped: list[dict[str, str]] = field(default_factory=list)
    nonfinite: int = 0
    no_signal: int = 0

    def add(self, samples: list[Any], targets: torch.Tensor, fused: torch.Tensor) -> None:
        """The labelled ``samples`` with their ``targets [B, T]`` and uint8 maps
        ``[B, T, R, R]``: only the maps of real targets are kept."""
        for b, sample in enumerate(samples):
            valid = targets[b] >= 0
            kept = fused[b][valid]
            self.ids.append(sample["id"])
            self.targets.append(targets[b][valid])
            self.maps.append(kept)
            self.stats.append(map_statistics(kept))
            self.offsets.append(self.offsets[-1] + len(kept))

    def content(self, index: int, config_hash: str) -> ShardContent:
        """The shard: targets padded with -1 to the widest row, maps concatenated."""
        width = max([len(t) for t in self.targets] + [1])
        padded = torch.full((len(self.ids), width), -1, dtype=torch.long)
        for row, values in enumerate(self.targets):
            padded[row, : len(values)] = values
        size = self.label_size
        empty = torch.zeros(0, size, size, dtype=torch.uint8)
        return ShardContent(
            index=index,
            config_hash=config_hash,
            ids=self.ids,
            targets=padded,
            maps=torch.cat(self.maps) if self.maps else empty,
            offsets=torch.tensor(self.offsets, dtype=torch.long),
            stats=torch.cat(self.stats) if self.stats else torch.zeros(0, 3),
            skipped=self.skipped,
            nonfinite=self.nonfinite,
            no_signal=self.no_signal,
        )


class _Generator:
    """The data of a store, planned shard by shard and batch by batch, and labelled."""

    def __init__(self, config: LabelGenerationConfig, registry: Registry) -> None:
        self.config = config
        # under torchrun each rank computes on its own GPU
        self.device = resolve_device(config.device, launched_local_rank())
        models, metas, in_channels = _load_classifiers(config, registry, self.device)
        self.metas = metas
        self.image_size = max(meta.image_size for meta in metas)
        self.label_size = config.label_size or self.image_size
        self.dataset = registry.create(
            "dataset",
            config.dataset,
            root=config.data,
            split=config.split,
            size=self.image_size,
            grayscale=in_channels == 1,
            on_error=config.on_error,
            **config.dataset_options,
        )
        attach_image_cache(self.dataset, config.image_cache)
        self.count = min(len(self.dataset), config.limit or len(self.dataset))
        self.shards = math.ceil(self.count / config.shard_size)
        self.labeller = _Labeller(config, registry, models, metas, self.label_size, self.device)

    def shard_range(self, index: int) -> range:
        """The dataset indices of shard ``index``."""
        start = index * self.config.shard_size
        return range(start, min(self.count, start + self.config.shard_size))

    def batch_plan(self, shards: list[int]) -> list[list[int]]:
        """The dataset indices of every batch of ``shards``, in order; no batch crosses a
        shard boundary."""
        size = self.config.batch_size
        return [
            list(range(first, min(part.stop, first + size)))
            for part in map(self.shard_range, shards)
            for first in range(part.start, part.stop, size)
        ]

    def loader(self, shards: list[int]) -> DataLoader[Any]:
        """Batches (lists of samples, skipped ones included) of ``shards``, read by
        ``config.workers`` processes ahead of the GPU, into pinned memory on CUDA."""
        return DataLoader(
            self.dataset,
            batch_sampler=self.batch_plan(shards),
            num_workers=self.config.workers,
            collate_fn=_as_list,
            pin_memory=self.device.type == "cuda",
        )

    def make_shard(
        self,
        index: int,
        batches: Iterator[list[Any]],
        config_hash: str,
        on_batch: BatchCallback | None,
        advance: Callable[[int], None],
        timing: Timing,
    ) -> ShardContent:
        """Label the batches of shard ``index`` (taken from ``batches``); ``timing``
        accumulates seconds waiting for data and seconds computing."""
        rows = _ShardRows(self.label_size)
        for batch_number in range(math.ceil(len(self.shard_range(index)) / self.config.batch_size)):
            waited = time.perf_counter()
            samples = next(batches)
            computing = time.perf_counter()
            timing["data_seconds"] += computing - waited
            _label_samples(self.labeller, samples, rows)
            timing["compute_seconds"] += time.perf_counter() - computing
            advance(len(samples))
            if on_batch is not None:
                on_batch(index, batch_number)
        return rows.content(index, config_hash)


def _label_samples(labeller: _Labeller, samples: list[Any], rows: _ShardRows) -> None:
    """Label one batch of ``samples`` into ``rows``; skipped samples are recorded."""
    good = [s for s in samples if not isinstance(s, SkippedSample)]
    rows.skipped += [
        {"id": s.id, "path": s.path, "reason": s.reason}
        for s in samples
        if isinstance(s, SkippedSample)
    ]
    if good:
        targets, fused, nonfinite, no_signal = labeller.label_batch(
            torch.stack([s["image"] for s in good]),
            torch.stack([s["labels"] for s in good]),
            torch.stack([s["label_mask"] for s in good]),
        )
        rows.nonfinite += nonfinite
        rows.no_signal += no_signal
        rows.add(good, targets, fused)


def _as_list(samples: list[Any]) -> list[Any]:
    """DataLoader collate: keep the samples (skipped ones included) as a list."""
    return samples


def _refuse_existing(out: Path, config_hash: str, *, resume: bool) -> None:
    """Refuse a store ``out`` already holds, unless ``resume`` and it is of this config.

    :raises DollError: without ``resume``; for an unreadable store config; for a store of
        another config (or other classifier weights).
    """
    if not (out / CONFIG).is_file():
        return
    if not resume:
        raise DollError(
            f"{out} already holds a label store; pass --resume to complete it "
            "or choose another --out"
        )
    previous, issues = read_store_config(out)
    if previous is None:
        raise DollError(f"{issues[0].path}: {issues[0].message}; use a new --out")
    if previous["config_hash"] != config_hash:
        raise DollError(
            f"{out} holds labels of another config (or other classifier "
            "weights); resume with the same settings or use a new --out"
        )


def _write_store_config(
    out: Path, config: LabelGenerationConfig, config_hash: str, generator: _Generator
) -> None:
    """The store's ``config.json``: its hash, number of shards and images, label size, the
    generation config (paths as :func:`~doll_core.relocation.recorded_path` names them) and
    each classifier's validation AUROC per observation (what ``auc_weighted`` fusion weighs
    by, kept here so that fusing never reads the checkpoints again)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "config_hash": config_hash,
        "total_shards": generator.shards,
        "images": generator.count,
        "label_size": generator.label_size,
        "config": config_record(config, out),
        CLASSIFIER_AUROC: [dict(meta.val_auroc) for meta in generator.metas],
    }
    atomic_write_text(out / CONFIG, json.dumps(record, indent=2) + "\n")


def _make_shards(
    generator: _Generator,
    out: Path,
    mine: list[int],
    config_hash: str,
    on_batch: BatchCallback | None,
    timing: Timing,
    *,
    progress: bool,
) -> int:
    """Make and write the shards ``mine`` (with a progress bar if ``progress``); returns
    the number of images read."""
    started = time.perf_counter()
    images_done = 0
    bar = progress_bar() if progress else None
    with bar or contextlib.nullcontext():
        total = sum(len(generator.shard_range(k)) for k in mine)
        task = bar.add_task("labels", total=total, info="") if bar else None

        def advance(count: int) -> None:
            nonlocal images_done
            images_done += count
            if bar is not None and task is not None:
                rate = images_done / max(time.perf_counter() - started, 1e-9)
                bar.update(task, advance=count, info=f"{rate:.1f} images/s")

        batches = batches_from(generator.loader(mine))
        for index in mine:
            before = completeness_sums(generator.labeller.performance())
            shard = generator.make_shard(index, batches, config_hash, on_batch, advance, timing)
            write_shard(out, shard)
            after = completeness_sums(generator.labeller.performance())
            if after is not None:
                write_shard_completeness(out, index, after, before)
    return images_done


def _write_generation_report(
    out: Path,
    manifest: dict[str, Any],
    generator: _Generator,
    context: DistributedContext,
    seconds: float,
    images_done: int,
    timing: Timing,
) -> None:
    """``generation.json``: speed, where the time went, the explainer's report, size."""
    total_bytes = sum(s["bytes"] for s in manifest["shards"].values())
    images = max(len(manifest["images"]), 1)
    computing = timing["data_seconds"] + timing["compute_seconds"]
    report = {
        "seconds": round(seconds, 2),
        "images_this_run": images_done,
        "images_per_second": round(images_done / seconds, 2) if seconds > 0 else None,
        "classifiers": len(generator.config.classifiers),
        "world_size": context.world_size,
        "device": str(generator.device),
        "workers": generator.config.workers,
        "data_seconds": round(timing["data_seconds"], 3),
        "compute_seconds": round(timing["compute_seconds"], 3),
        "data_wait_fraction": round(timing["data_seconds"] / max(computing, 1e-9), 4),
        "explainer": with_store_completeness(
            generator.labeller.performance(), out, [int(k) for k in manifest["shards"]]
        ),
        "bytes": total_bytes,
        "bytes_per_image": round(total_bytes / images, 1),
    }
    atomic_write_text(out / "generation.json", json.dumps(report, indent=2) + "\n")


def generate_labels(
    config: LabelGenerationConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_batch: BatchCallback | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Generate (or complete, with ``resume``) the label store ``out``; returns its manifest."""
    out = expand_home(out, "label store")
    config_hash = config.content_hash()
    _refuse_existing(out, config_hash, resume=resume)
    refuse_links_leaving(out, "label store")
    generator = _Generator(config, registry or get_registry())
    context = setup_distributed(generator.device)
    try:
        if context.is_main:
            _write_store_config(out, config, config_hash, generator)
        if context.enabled:
            torch.distributed.barrier()
        done = _resume_point(out, context) if resume else set()
        mine = [
            k
            for k in range(generator.shards)
            if k % context.world_size == context.rank and k not in done
        ]
        started = time.perf_counter()
        timing: Timing = {"data_seconds": 0.0, "compute_seconds": 0.0}
        images_done = _make_shards(
            generator,
            out,
            mine,
            config_hash,
            on_batch,
            timing,
            progress=progress and context.is_main,
        )
        seconds = time.perf_counter() - started
        if context.enabled:
            torch.distributed.barrier()
        manifest: dict[str, Any] = {}
        if context.is_main:
            manifest = build_manifest(out, config_hash, generator.shards)
            write_manifest(out, manifest)
            _write_generation_report(
                out, manifest, generator, context, seconds, images_done, timing
            )
        return manifest
    finally:
        cleanup_distributed(context)
