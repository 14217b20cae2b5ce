"""The label-generation stage: dataset -> targets -> every classifier x the explainer ->
post-processing -> fusion -> label store.

One pass over the data, shard by shard; each batch is explained by all classifiers
before the next is read. Under ``torchrun``, rank ``r`` makes the shards ``k`` with
``k % world_size == r`` and rank 0 writes the manifest. A run killed at any moment and
restarted with ``resume=True`` recomputes only the shards that are missing or whose
checksum does not match, and ends with the same bytes in every shard.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional
from torch.utils.data import DataLoader

from doll_core.atomic import atomic_write_text
from doll_core.attribution.api import check_attributions
from doll_core.attribution.postprocess import postprocess
from doll_core.attribution.targets import select_targets
from doll_core.checkpoint import ClassifierMeta, load_classifier
from doll_core.data.samples import SkippedSample, batches_from
from doll_core.digests import sha256_of
from doll_core.errors import DollError
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.fusion import fuse_maps
from doll_core.labels.store import (
    CONFIG,
    ShardContent,
    build_manifest,
    map_statistics,
    read_shard,
    shard_indices,
    shard_path,
    write_manifest,
    write_shard,
)
from doll_core.models import Classifier
from doll_core.observations import OBSERVATIONS
from doll_core.progress import progress_bar
from doll_core.registry import Registry, get_registry
from doll_core.training.distributed import cleanup_distributed, setup_distributed
from doll_core.training.loop import resolve_device

BatchCallback = Callable[[int, int], None]


def _valid_existing_shards(store: Path, config_hash: str, total_shards: int) -> set[int]:
    """Shards ``0 .. total_shards - 1`` on disk that match the manifest's checksum (or, when
    the manifest does not list them, that load and carry this config's hash). Files with
    higher numbers are not shards of this store: they are left alone and not adopted."""
    listed: dict[str, Any] = {}
    manifest = store / "manifest.json"
    if manifest.is_file():
        try:
            listed = json.loads(manifest.read_text()).get("shards", {})
        except json.JSONDecodeError:
            listed = {}
    valid = set()
    for index in shard_indices(store):
        if index >= total_shards:
            continue
        path = shard_path(store, index)
        entry = listed.get(str(index))
        try:
            if entry is not None and entry.get("sha256") != sha256_of(path):
                raise DollError("checksum mismatch")
            read_shard(path, config_hash=config_hash)
        except DollError:
            path.unlink()  # corrupted or foreign: regenerate, never read
            continue
        valid.add(index)
    return valid


class _Generator:
    def __init__(self, config: LabelGenerationConfig, registry: Registry) -> None:
        self.config = config
        # under torchrun each rank computes on its own GPU
        self.device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        loaded = [
            load_classifier(p, device=self.device, registry=registry) for p in config.classifiers
        ]
        self.models: list[Classifier] = [m for m, _ in loaded]
        self.metas: list[ClassifierMeta] = [meta for _, meta in loaded]
        channels = {meta.in_channels for meta in self.metas}
        if len(channels) != 1:
            raise DollError("all classifiers of a label store must take the same input channels")
        self.in_channels = channels.pop()
        self.image_size = max(meta.image_size for meta in self.metas)
        self.label_size = config.label_size or self.image_size
        self.dataset = registry.create(
            "dataset",
            config.dataset,
            root=config.data,
            split=config.split,
            size=self.image_size,
            grayscale=self.in_channels == 1,
            on_error=config.on_error,
            **config.dataset_options,
        )
        self.count = min(len(self.dataset), config.limit or len(self.dataset))
        self.shards = math.ceil(self.count / config.shard_size)
        self.explainer = registry.create("explainer", config.explainer, **config.explainer_params)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            if config.explainer_params.get("channels_last"):
                for model in self.models:
                    model.to(memory_format=torch.channels_last)
        self.fusion = registry.create("fusion", config.fusion, **config.fusion_params)
        # validation AUROC per classifier and observation (0.5 = no skill when unknown)
        self.auroc = torch.tensor(
            [
                [
                    meta.val_auroc.get(name) if meta.val_auroc.get(name) is not None else 0.5
                    for name in OBSERVATIONS
                ]
                for meta in self.metas
            ],
            dtype=torch.float32,
        )

    def _targets(
        self, labels: torch.Tensor, mask: torch.Tensor, probabilities: torch.Tensor
    ) -> torch.Tensor:
        mode = self.config.targets
        if mode == "positive":
            return select_targets("positive", labels=labels, label_mask=mask)
        if mode == "predicted":
            return select_targets(
                "predicted", probabilities=probabilities, threshold=self.config.threshold
            )
        return select_targets("all", labels=labels)

    def label_batch(
        self, images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """-> targets ``[B, T]``, fused uint8 maps ``[B, T, R, R]``, and the numbers of
        maps zeroed for NaN/Inf and for having no signal."""
        images = images.to(self.device)
        resized = {}
        probabilities = []
        with torch.no_grad():
            for model, meta in zip(self.models, self.metas, strict=True):
                size = (meta.image_size, meta.image_size)
                x = (
                    images
                    if tuple(images.shape[-2:]) == size
                    else functional.interpolate(
                        images, size=size, mode="bilinear", align_corners=False, antialias=True
                    )
                )
                resized[id(model)] = x
                probabilities.append(torch.sigmoid(model(x).float()).cpu())
        ensemble = torch.stack(probabilities).mean(dim=0)
        targets = self._targets(labels, mask, ensemble)
        per_classifier = []
        nonfinite = no_signal = 0
        for model, probs in zip(self.models, probabilities, strict=True):
            x = resized[id(model)]
            device_targets = targets.to(self.device)
            raw, bad = check_attributions(
                self.explainer.attribute(model, x, device_targets),
                x,
                device_targets,
                self.config.explainer,
            )
            nonfinite += bad
            gathered = probs.gather(1, targets.clamp(min=0)) * (targets >= 0)
            post = postprocess(
                raw.cpu(), self.config.postprocess, targets=targets, probabilities=gathered
            )
            no_signal += post.no_signal
            soft = post.soft
            if soft.shape[-1] != self.label_size:
                b, t = soft.shape[:2]
                soft = functional.interpolate(
                    soft.view(b * t, 1, *soft.shape[-2:]), size=(self.label_size,) * 2, mode="area"
                ).view(b, t, self.label_size, self.label_size)
            per_classifier.append(soft.clamp(0, 1))
        stacked = torch.stack(per_classifier)
        weights = self.auroc[:, targets.clamp(min=0)]  # [N, B, T]
        fused = fuse_maps(self.fusion, self.config.fusion, stacked, weights)
        fused = fused * (targets >= 0)[:, :, None, None]
        return targets, torch.round(fused * 255).to(torch.uint8), nonfinite, no_signal

    def batch_plan(self, shards: list[int]) -> list[list[int]]:
        """The dataset indices of every batch of ``shards``, in order; no batch crosses a
        shard boundary."""
        plan = []
        for index in shards:
            start = index * self.config.shard_size
            stop = min(self.count, start + self.config.shard_size)
            plan += [
                list(range(first, min(stop, first + self.config.batch_size)))
                for first in range(start, stop, self.config.batch_size)
            ]
        return plan

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
        timing: dict[str, float],
    ) -> ShardContent:
        """Label the batches of shard ``index`` (taken from ``batches``); ``timing``
        accumulates seconds waiting for data and seconds computing."""
        start = index * self.config.shard_size
        stop = min(self.count, start + self.config.shard_size)
        ids: list[str] = []
        targets_rows: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        stats: list[torch.Tensor] = []
        offsets = [0]
        skipped: list[dict[str, str]] = []
        nonfinite = no_signal = 0
        for batch_number in range(math.ceil((stop - start) / self.config.batch_size)):
            waited = time.perf_counter()
            samples = next(batches)
            computing = time.perf_counter()
            timing["data_seconds"] += computing - waited
            good = [s for s in samples if not isinstance(s, SkippedSample)]
            skipped += [
                {"id": s.id, "path": s.path, "reason": s.reason}
                for s in samples
                if isinstance(s, SkippedSample)
            ]
            if good:
                targets, fused, bad, empty = self.label_batch(
                    torch.stack([s["image"] for s in good]),
                    torch.stack([s["labels"] for s in good]),
                    torch.stack([s["label_mask"] for s in good]),
                )
                nonfinite, no_signal = nonfinite + bad, no_signal + empty
                for b, sample in enumerate(good):
                    valid = targets[b] >= 0
                    ids.append(sample["id"])
                    targets_rows.append(targets[b][valid])
                    kept = fused[b][valid]
                    maps.append(kept)
                    stats.append(map_statistics(kept))
                    offsets.append(offsets[-1] + len(kept))
            timing["compute_seconds"] += time.perf_counter() - computing
            advance(len(samples))
            if on_batch is not None:
                on_batch(index, batch_number)
        width = max([len(t) for t in targets_rows] + [1])
        padded = torch.full((len(ids), width), -1, dtype=torch.long)
        for row, values in enumerate(targets_rows):
            padded[row, : len(values)] = values
        size = self.label_size
        return ShardContent(
            index=index,
            config_hash=config_hash,
            ids=ids,
            targets=padded,
            maps=torch.cat(maps) if maps else torch.zeros(0, size, size, dtype=torch.uint8),
            offsets=torch.tensor(offsets, dtype=torch.long),
            stats=torch.cat(stats) if stats else torch.zeros(0, 3),
            skipped=skipped,
            nonfinite=nonfinite,
            no_signal=no_signal,
        )

    def performance(self) -> dict[str, Any] | None:
        """The explainer's own report (autocast error, compile time), when it keeps one."""
        report = getattr(self.explainer, "performance_report", None)
        return report() if callable(report) else None


def _as_list(samples: list[Any]) -> list[Any]:
    """DataLoader collate: keep the samples (skipped ones included) as a list."""
    return samples


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
    out = Path(out).expanduser()
    config_hash = config.content_hash()
    saved = out / CONFIG
    if saved.is_file() and not resume:
        raise DollError(
            f"{out} already holds a label store; pass --resume to complete it "
            "or choose another --out"
        )
    if saved.is_file():
        previous = json.loads(saved.read_text()).get("config_hash")
        if previous != config_hash:
            raise DollError(
                f"{out} holds labels of another config (or other classifier "
                "weights); resume with the same settings or use a new --out"
            )
    generator = _Generator(config, registry or get_registry())
    context = setup_distributed(generator.device)
    try:
        if context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            record = {
                "config_hash": config_hash,
                "total_shards": generator.shards,
                "images": generator.count,
                "label_size": generator.label_size,
                "config": config.model_dump(mode="json"),
            }
            atomic_write_text(saved, json.dumps(record, indent=2) + "\n")
        if context.enabled:
            torch.distributed.barrier()
        done = _valid_existing_shards(out, config_hash, generator.shards) if resume else set()
        mine = [
            k
            for k in range(generator.shards)
            if k % context.world_size == context.rank and k not in done
        ]
        started = time.perf_counter()
        images_done = 0
        bar = progress_bar() if progress and context.is_main else None
        with bar or contextlib.nullcontext():
            task = (
                bar.add_task(
                    "labels",
                    total=sum(
                        min(generator.count, (k + 1) * config.shard_size) - k * config.shard_size
                        for k in mine
                    ),
                    info="",
                )
                if bar
                else None
            )

            def advance(count: int) -> None:
                nonlocal images_done
                images_done += count
                if bar is not None and task is not None:
                    rate = images_done / max(time.perf_counter() - started, 1e-9)
                    bar.update(task, advance=count, info=f"{rate:.1f} images/s")

            timing = {"data_seconds": 0.0, "compute_seconds": 0.0}
            batches = batches_from(generator.loader(mine))
            for index in mine:
                shard = generator.make_shard(index, batches, config_hash, on_batch, advance, timing)
                write_shard(out, shard)
        seconds = time.perf_counter() - started
        if context.enabled:
            torch.distributed.barrier()
        manifest: dict[str, Any] = {}
        if context.is_main:
            manifest = build_manifest(out, config_hash, generator.shards)
            write_manifest(out, manifest)
            total_bytes = sum(s["bytes"] for s in manifest["shards"].values())
            images = max(len(manifest["images"]), 1)
            atomic_write_text(
                out / "generation.json",
                json.dumps(
                    {
                        "seconds": round(seconds, 2),
                        "images_this_run": images_done,
                        "images_per_second": round(images_done / seconds, 2)
                        if seconds > 0
                        else None,
                        "classifiers": len(config.classifiers),
                        "world_size": context.world_size,
                        "device": str(generator.device),
                        "workers": config.workers,
                        "data_seconds": round(timing["data_seconds"], 3),
                        "compute_seconds": round(timing["compute_seconds"], 3),
                        "data_wait_fraction": round(
                            timing["data_seconds"]
                            / max(timing["data_seconds"] + timing["compute_seconds"], 1e-9),
                            4,
                        ),
                        "explainer": generator.performance(),
                        "bytes": total_bytes,
                        "bytes_per_image": round(total_bytes / images, 1),
                    },
                    indent=2,
                )
                + "\n",
            )
        return manifest
    finally:
        cleanup_distributed(context)
