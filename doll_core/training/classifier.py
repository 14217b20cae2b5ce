"""The classifier-training stage: any backbone plugin, the 14 CheXpert observations.

Multi-label BCE with the label mask, AdamW (no decay on biases and norms), linear warm-up
then cosine decay per step, radiograph augmentation, validation every epoch with
per-observation and mean AUROC, best-checkpoint selection and early stopping. A run folder
holds ``config.json``, ``metrics.json`` (one entry per epoch: losses, AUROC, images/s,
epoch time), ``best.pt`` and ``last.pt`` (classifier checkpoints, see
:mod:`doll_core.checkpoint`), ``state.pt`` (everything needed to resume: weights,
optimiser, scheduler, scaler and RNG states) and ``skipped.jsonl`` (unreadable images).
Every file is written atomically, ``state.pt`` last, so a run killed at any point resumes
from its last completed epoch and ends with the same weights as an uninterrupted run.

On CUDA: AMP (bf16, or fp16 with a gradient scaler), channels_last, cudnn.benchmark,
pinned memory, persistent DataLoader workers. Under ``torchrun``: DDP, a
DistributedSampler, metrics reduced across ranks, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from doll_core.atomic import atomic_torch_save, atomic_write_text
from doll_core.checkpoint import ClassifierMeta, build_classifier, save_classifier
from doll_core.data.samples import SkippedSample, collate_samples
from doll_core.errors import DollError
from doll_core.metrics import masked_auroc_per_class
from doll_core.models import Classifier
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from doll_core.progress import progress_bar
from doll_core.registry import Registry, get_registry
from doll_core.training.augment import augment_batch
from doll_core.training.config import RESUMABLE_CHANGES, ClassifierTrainingConfig
from doll_core.training.distributed import (
    DistributedContext,
    all_gather_objects,
    broadcast_buffers,
    cleanup_distributed,
    setup_distributed,
    sum_across,
)
from doll_core.training.losses import masked_bce_with_logits
from doll_core.training.schedule import warmup_cosine

STATE_FORMAT = "doll-training-state"
STATE_VERSION = 1
StepCallback = Callable[[int, int], None]


@dataclass
class TrainResult:
    """What a finished run returns (also on ranks other than 0)."""

    model: Classifier
    out: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_mean_auroc: float = math.nan
    stopped_early: bool = False


def resolve_device(name: str, context_local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this rank's GPU) when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DollError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", context_local_rank)
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full precision)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class _Run:
    """The state of one training run; :func:`train_classifier` drives it."""

    def __init__(
        self,
        config: ClassifierTrainingConfig,
        out: Path,
        registry: Registry,
        progress: bool,
        on_step: StepCallback | None,
    ) -> None:
        self.config = config
        self.out = out
        self.progress = progress
        self.on_step = on_step
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(config.device, local_rank)
        self.context: DistributedContext = setup_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        self.amp_dtype = autocast_dtype(config.amp, self.device)
        self.channels_last = config.channels_last and self.device.type == "cuda"

        options = dict(config.dataset_options)
        common = {
            "size": config.image_size,
            "grayscale": config.in_channels == 1,
            "on_error": config.on_error,
        }
        self.train_set = registry.create(
            "dataset",
            config.dataset,
            root=config.data,
            split=config.train_split,
            **common,
            **options,
        )
        self.val_set = registry.create(
            "dataset", config.dataset, root=config.data, split=config.val_split, **common, **options
        )
        if len(self.train_set) < config.batch_size * self.context.world_size:
            raise DollError(
                f"{len(self.train_set)} training images are fewer than one batch of "
                f"{config.batch_size} per process"
            )
        self.sampler: DistributedSampler[Any] = DistributedSampler(
            self.train_set,
            num_replicas=self.context.world_size,
            rank=self.context.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        loader_options: dict[str, Any] = {
            "num_workers": config.num_workers,
            "pin_memory": self.device.type == "cuda",
            "persistent_workers": config.num_workers > 0,
            "collate_fn": collate_samples,
        }
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=self.sampler,
            drop_last=True,
            **loader_options,
        )
        shard = list(range(self.context.rank, len(self.val_set), self.context.world_size))
        self.val_loader = DataLoader(
            Subset(self.val_set, shard),
            batch_size=config.batch_size,
            shuffle=False,
            **loader_options,
        )
        limit = config.max_steps_per_epoch or len(self.train_loader)
        self.steps_per_epoch = min(len(self.train_loader), limit)

        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.meta = ClassifierMeta(
            backbone=config.backbone,
            backbone_params=dict(config.backbone_params),
            in_channels=config.in_channels,
            image_size=config.image_size,
            mean=tuple(config.mean),
            std=tuple(config.std),
            training_config=config.to_json_dict(),
        )
        self.model = build_classifier(self.meta, registry).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trained: nn.Module = self.model
        if self.context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            _parameter_groups(self.model, config.weight_decay), lr=config.lr
        )
        total = config.epochs * self.steps_per_epoch
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: warmup_cosine(
                step, warmup_steps=warmup, total_steps=total, floor=config.min_lr_ratio
            ),
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.augment_rng = torch.Generator().manual_seed(config.seed + 7919 * self.context.rank)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_epoch = 0
        self.best_metric = -math.inf
        self.bad_epochs = 0
        self.finished = False
        self.stopped_early = False

    # ------------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "config": self.config.to_json_dict(),
            "epoch": self.epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "augment": self.augment_rng.get_state(),
            },
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "bad_epochs": self.bad_epochs,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
        }

    def restore(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DollError(f"cannot read the training state {path}: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DollError(f"{path} is not a DoLL training state")
        saved = dict(state["config"])
        current = self.config.to_json_dict()
        changed = sorted(
            k
            for k in set(saved) | set(current)
            if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
        )
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise DollError(
                f"{self.out} holds a run with another config ({details}); resume it with "
                "the same settings or train into a new folder"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.augment_rng.set_state(state["rng"]["augment"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best_epoch = int(state["best_epoch"])
        self.best_metric = float(state["best_metric"])
        self.bad_epochs = int(state["bad_epochs"])
        self.finished = bool(state["finished"]) and self.epoch >= self.config.epochs
        self.stopped_early = bool(state["stopped_early"])
        if self.stopped_early:
            self.finished = True

    # ------------------------------------------------------------------------- epochs
    def _batches(
        self, loader: DataLoader[Any], skipped: list[SkippedSample]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        size = self.config.image_size
        for batch in loader:
            skipped.extend(batch["skipped"])
            if "image" in batch:
                images = batch["image"].to(self.device, non_blocking=True)
                labels = batch["labels"].to(self.device, non_blocking=True)
                mask = batch["label_mask"].to(self.device, non_blocking=True)
            else:  # every image of the batch was unreadable: a no-op step keeps ranks in step
                images = torch.zeros(1, self.config.in_channels, size, size, device=self.device)
                labels = torch.zeros(1, NUM_OBSERVATIONS, device=self.device)
                mask = torch.zeros(1, NUM_OBSERVATIONS, dtype=torch.bool, device=self.device)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels, mask

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_epoch(self, bar: Any) -> dict[str, Any]:
        self.sampler.set_epoch(self.epoch)
        self.trained.train()
        skipped: list[SkippedSample] = []
        loss_sum, seen = 0.0, 0
        started = time.perf_counter()
        task = (
            bar.add_task(
                f"epoch {self.epoch + 1}/{self.config.epochs}", total=self.steps_per_epoch, info=""
            )
            if bar
            else None
        )
        for step, (images, labels, mask) in enumerate(self._batches(self.train_loader, skipped)):
            if step >= self.steps_per_epoch:
                break
            images = augment_batch(images, self.config.augment, self.augment_rng)
            with self._autocast():
                logits = self.trained(images)
            loss = masked_bce_with_logits(logits, labels, mask)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += float(loss.detach()) * len(images)
            seen += len(images)
            if bar is not None and task is not None:
                rate = seen * self.context.world_size / (time.perf_counter() - started)
                bar.update(
                    task, advance=1, info=f"loss {loss_sum / seen:.4f} · {rate:.1f} images/s"
                )
            if self.on_step is not None:
                self.on_step(self.epoch, step)
        broadcast_buffers(self.context, self.model)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        loss_sum, seen_all = sum_across(self.context, loss_sum, float(seen))
        gathered = all_gather_objects(self.context, [s.__dict__ for s in skipped])
        return {
            "train_loss": loss_sum / max(seen_all, 1.0),
            "train_images_per_second": seen_all / seconds if seconds > 0 else None,
            "train_seconds": seconds,
            "skipped": [item for part in gathered for item in part],
        }

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        self.model.eval()
        skipped: list[SkippedSample] = []
        probabilities, labels, masks = [], [], []
        started = time.perf_counter()
        for images, batch_labels, batch_mask in self._batches(self.val_loader, skipped):
            with self._autocast():
                logits = self.model(images)
            probabilities.append(torch.sigmoid(logits.float()).cpu())
            labels.append(batch_labels.cpu())
            masks.append(batch_mask.cpu())
        local = (
            torch.cat(probabilities) if probabilities else torch.zeros(0, NUM_OBSERVATIONS),
            torch.cat(labels) if labels else torch.zeros(0, NUM_OBSERVATIONS),
            torch.cat(masks) if masks else torch.zeros(0, NUM_OBSERVATIONS, dtype=torch.bool),
        )
        parts = all_gather_objects(self.context, local)
        probs = torch.cat([p[0] for p in parts])
        truth = torch.cat([p[1] for p in parts])
        counted = torch.cat([p[2] for p in parts])
        eps = 1e-6
        logit = torch.logit(probs.clamp(eps, 1 - eps))
        scores = masked_auroc_per_class(probs, truth, counted)
        defined = [s for s in scores if not math.isnan(s)]
        gathered = all_gather_objects(self.context, [s.__dict__ for s in skipped])
        return {
            "val_loss": float(masked_bce_with_logits(logit, truth, counted)),
            "mean_auroc": sum(defined) / len(defined) if defined else math.nan,
            "auroc": {
                n: (None if math.isnan(s) else round(s, 6))
                for n, s in zip(OBSERVATIONS, scores, strict=True)
            },
            "val_images": int(probs.shape[0]),
            "val_seconds": time.perf_counter() - started,
            "val_skipped": [item for part in gathered for item in part],
        }

    # ------------------------------------------------------------------------- files
    def write_outputs(self, improved: bool) -> None:
        if not self.context.is_main:
            return
        last = self.history[-1]
        meta = ClassifierMeta(
            **{**self.meta.__dict__, "val_auroc": dict(last["auroc"]), "epoch": self.epoch}
        )
        if improved:
            save_classifier(self.out / "best.pt", self.model, meta)
        save_classifier(self.out / "last.pt", self.model, meta)
        skipped = [s for entry in self.history for s in entry.get("skipped", [])]
        atomic_write_text(
            self.out / "skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped)
        )
        summary = {
            "best_epoch": self.best_epoch,
            "best_mean_auroc": self.best_metric if self.best_epoch else None,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "history": [
                {k: v for k, v in e.items() if k not in ("skipped", "val_skipped")}
                for e in self.history
            ],
        }
        atomic_write_text(self.out / "metrics.json", json.dumps(summary, indent=2) + "\n")
        atomic_torch_save(self.state(), self.out / "state.pt")  # last: marks the epoch done

    def run(self) -> None:
        bar = progress_bar() if self.progress and self.context.is_main else None
        with bar or contextlib.nullcontext():
            while not self.finished and self.epoch < self.config.epochs:
                started = time.perf_counter()
                record = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
                record.update(self.train_epoch(bar))
                record.update(self.validate())
                record["epoch_seconds"] = time.perf_counter() - started
                record["skipped"] = record.pop("skipped") + record.pop("val_skipped")
                self.epoch += 1
                self.history.append(record)
                metric = record["mean_auroc"]
                improved = (
                    not math.isnan(metric) and metric > self.best_metric + self.config.min_delta
                )
                if improved or self.best_epoch == 0:
                    self.best_metric = metric if not math.isnan(metric) else self.best_metric
                    self.best_epoch = self.epoch
                    self.bad_epochs = 0
                    improved = True
                else:
                    self.bad_epochs += 1
                patience = self.config.early_stopping_patience
                if patience is not None and self.bad_epochs >= patience:
                    self.stopped_early = True
                self.finished = self.stopped_early or self.epoch >= self.config.epochs
                self.write_outputs(improved)
                if bar is not None:
                    bar.console.print(
                        f"epoch {self.epoch}: train loss {record['train_loss']:.4f}, "
                        f"val loss {record['val_loss']:.4f}, mean AUROC "
                        f"{metric:.4f}, {record['train_images_per_second']:.1f} images/s"
                    )


def train_classifier(
    config: ClassifierTrainingConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
    registry: Registry | None = None,
) -> TrainResult:
    """Train a classifier into the run folder ``out``.

    :param resume: continue the run in ``out`` from its last completed epoch (a folder
        that already holds a run is refused otherwise, so nothing is overwritten).
    :param progress: show rich progress bars (rank 0).
    :param on_step: called as ``on_step(epoch, step)`` after every optimiser step.
    """
    out = Path(out).expanduser()
    state_path = out / "state.pt"
    if state_path.exists() and not resume:
        raise DollError(
            f"{out} already holds a training run; pass --resume to continue it "
            "or choose another --out"
        )
    run = _Run(config, out, registry or get_registry(), progress, on_step)
    try:
        if state_path.exists():
            run.restore(state_path)
        elif run.context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                out / "config.json", json.dumps(config.to_json_dict(), indent=2) + "\n"
            )
        run.run()
    finally:
        cleanup_distributed(run.context)
    return TrainResult(
        model=run.model,
        out=out,
        history=run.history,
        best_epoch=run.best_epoch,
        best_mean_auroc=run.best_metric if run.best_epoch else math.nan,
        stopped_early=run.stopped_early,
    )
