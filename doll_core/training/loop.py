"""The training loop every stage shares (classifiers, segmentation pre-training and
fine-tuning).

A :class:`Trainer` owns the machinery: device, AMP (bf16, or fp16 with a scaler),
channels_last and cudnn.benchmark on CUDA, DDP under ``torchrun`` with rank-sharded data
and metrics reduced across ranks, AdamW with per-step warm-up and cosine decay, a seeded
augmentation generator, validation every epoch with best-checkpoint selection and early
stopping, rich progress bars with images/s, and atomic run-folder files: ``config.json``,
``metrics.json`` (one record per epoch), ``skipped.jsonl``, the subclass's checkpoints,
and ``state.pt`` last (weights, optimiser, scheduler, scaler and RNG states; every
``state_every`` epochs and after the last), so that a run killed at any point resumes from
its last saved epoch and ends with the same weights as an uninterrupted run. Subclasses
supply data, model, loss, validation and checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from doll_core.atomic import atomic_torch_save, atomic_write_text
from doll_core.compiling import CompiledModule
from doll_core.data.samples import SkippedSample, batches_from, collate_samples
from doll_core.devices import check_device
from doll_core.errors import DollError
from doll_core.payloads import safe_torch_load
from doll_core.progress import progress_bar
from doll_core.relocation import same_record
from doll_core.training.distributed import (
    DistributedContext,
    all_gather_objects,
    broadcast_buffers,
    cleanup_distributed,
    launched_local_rank,
    setup_distributed,
    sum_across,
)
from doll_core.training.schedule import warmup_cosine

STATE_FORMAT = "doll-training-state"
STATE_VERSION = 1
StepCallback = Callable[[int, int], None]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this rank's GPU) when available, else CPU.

    :raises DollError: for a name :func:`doll_core.devices.check_device` refuses, or CUDA
        asked for where there is none.
    """
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DollError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


#: devices whose AdamW runs as one fused kernel
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full precision)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def parameter_groups(
    parameters: Sequence[nn.Parameter], weight_decay: float, lr: float
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and kernels, none on biases and norms."""
    decay = [p for p in parameters if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in parameters if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay, "lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr},
    ]


class Trainer:
    """Generic training run; see the module docstring. ``config`` needs the loop fields of
    :class:`doll_core.training.config.LoopSettings`, a ``seed``, a ``device`` and
    ``to_record(holder)``."""

    #: config fields that may change when a run is resumed
    resumable_changes: frozenset[str] = frozenset(
        {
            "data",
            "epochs",
            "num_workers",
            "device",
            "early_stopping_patience",
            "compile",
            "state_every",
            "cache_samples",
            "image_cache",
        }
    )
    #: the validation record key that selects the best epoch (higher is better)
    score_key = "score"

    def __init__(
        self, config: Any, out: Path, progress: bool = False, on_step: StepCallback | None = None
    ) -> None:
        self.config, self.out, self.progress, self.on_step = config, out, progress, on_step
        self.device = resolve_device(config.device, launched_local_rank())
        self.context: DistributedContext = setup_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        self.amp_dtype = autocast_dtype(config.amp, self.device)
        self.channels_last = config.channels_last and self.device.type == "cuda"
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.setup()
        self.sampler = self.make_sampler()
        loader_options: dict[str, Any] = {
            "num_workers": config.num_workers,
            "pin_memory": self.device.type == "cuda",
            "persistent_workers": config.num_workers > 0,
            "collate_fn": collate_samples,
        }
        self.train_loader: DataLoader[Any] = DataLoader(
            self.train_set,
            batch_size=config.batch_size,
            sampler=self.sampler,
            drop_last=True,
            **loader_options,
        )
        shard = list(range(self.context.rank, len(self.val_set), self.context.world_size))
        self.val_loader: DataLoader[Any] = DataLoader(
            Subset(self.val_set, shard),
            batch_size=config.batch_size,
            shuffle=False,
            **loader_options,
        )
        limit = config.max_steps_per_epoch or len(self.train_loader)
        self.steps_per_epoch = min(len(self.train_loader), limit)
        if self.steps_per_epoch == 0:
            raise DollError(
                f"{len(self.train_set)} training images are fewer than one batch "
                f"of {config.batch_size} per process"
            )
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trained: nn.Module = self.model
        if self.context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.compiled: CompiledModule | None = None
        if config.compile:
            self.compiled = CompiledModule(self.trained)
            self.trained = self.compiled
        # the fused kernel: one pass over all tensors (on 2 CPU cores, a U-Net R18 step
        # spends 10 ms in it instead of 38); values differ from the loop's in the last bits
        self.optimizer = torch.optim.AdamW(
            self.parameter_groups(), lr=config.lr, fused=self.device.type in FUSED_ADAMW_DEVICES
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

    # ---------------------------------------------------------------- subclass hooks
    model: nn.Module
    train_set: Any  # a sized map-style dataset
    val_set: Any

    def setup(self) -> None:
        """Set ``self.model`` (unwrapped), ``self.train_set`` and ``self.val_set``."""
        raise NotImplementedError

    def make_sampler(self) -> Sampler[int]:
        """The training sampler (default: shuffled, sharded by rank, new order per epoch)."""
        return DistributedSampler(
            self.train_set,
            num_replicas=self.context.world_size,
            rank=self.context.rank,
            shuffle=True,
            seed=self.config.seed,
            drop_last=True,
        )

    def parameter_groups(self) -> list[dict[str, Any]]:
        return parameter_groups(
            list(self.model.parameters()), self.config.weight_decay, self.config.lr
        )

    def training_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """The loss of one batch through ``self.trained`` and the number of images."""
        raise NotImplementedError

    def validate(self) -> dict[str, Any]:
        """Validation record; ``record[self.score_key]`` selects the best epoch."""
        raise NotImplementedError

    def save_checkpoints(self, improved: bool) -> None:
        """Write the stage's checkpoints (rank 0 only; called before ``state.pt``)."""

    def after_train_mode(self) -> None:
        """Called after the model is put in training mode each epoch (e.g. to keep frozen
        parts in eval mode, so that their BatchNorm statistics do not move)."""

    def describe(self, record: dict[str, Any]) -> str:
        return (
            f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
            f"{self.score_key} {record[self.score_key]:.4f}, "
            f"{record['train_images_per_second']:.1f} images/s"
        )

    # ---------------------------------------------------------------- helpers
    def forward_backward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """Loss and gradients of one batch; with ``compile``, the first backward (which
        torch compiles) falls back to eager if it fails, repeating the step."""

        def step() -> tuple[torch.Tensor, int]:
            loss, count = self.training_loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            return loss, count

        if self.compiled is not None:
            return self.compiled.guarded_backward(step)
        return step()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, tensor: torch.Tensor, image: bool = False) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if image and self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def gather(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Concatenate each rank's list of CPU tensors (validation outputs) in rank order."""
        parts = all_gather_objects(self.context, list(tensors))
        return [torch.cat([part[i] for part in parts]) for i in range(len(tensors))]

    def iterate(
        self, loader: DataLoader[Any], skipped: list[SkippedSample]
    ) -> Iterator[dict[str, Any]]:
        """Batches, recording skipped samples; an all-skipped batch yields ``{}``."""
        for batch in batches_from(loader):
            skipped.extend(batch["skipped"])
            yield batch if "image" in batch else {}

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        state = self._state_without_digest()
        state["digest"] = tensor_digest(state["model"], state["optimizer"])
        return state

    def _state_without_digest(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "config": self.config.to_record(self.out),
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
        restart = (
            f"delete {path} to train this stage again from its first epoch "
            "(or put back a good copy)"
        )
        try:
            state = safe_torch_load(path, "training state", convertible=False)
        except DollError as exc:
            raise DollError(f"{exc}; {restart}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DollError(f"{path} is not a DoLL training state; {restart}")
        saved_digest = state.get("digest")  # states written before 0.1 carry none
        if saved_digest is not None and saved_digest != tensor_digest(
            state["model"], state["optimizer"]
        ):
            raise DollError(
                f"{path} is corrupted: its weights no longer match the checksum saved "
                f"with them; {restart}"
            )
        current = self.config.to_record(self.out)
        saved = same_record(dict(state["config"]), current, self.config, self.out)
        changed = sorted(
            k
            for k in set(saved) | set(current)
            if k not in self.resumable_changes and saved.get(k) != current.get(k)
        )
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise DollError(
                f"{self.out} holds a run with another config ({details}); resume it "
                "with the same settings or train into a new folder"
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
        self.stopped_early = bool(state["stopped_early"])
        self.finished = self.stopped_early or (
            bool(state["finished"]) and self.epoch >= self.config.epochs
        )

    # ---------------------------------------------------------------- epochs
    def train_epoch(self, bar: Any) -> dict[str, Any]:
        if isinstance(self.sampler, DistributedSampler) or hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        self.trained.train()
        self.after_train_mode()
        skipped: list[SkippedSample] = []
        loss_sum, seen = 0.0, 0
        data_seconds = 0.0
        started = time.perf_counter()
        task = (
            bar.add_task(
                f"epoch {self.epoch + 1}/{self.config.epochs}", total=self.steps_per_epoch, info=""
            )
            if bar
            else None
        )
        batches = self.iterate(self.train_loader, skipped)
        for step in range(self.steps_per_epoch):
            waited = time.perf_counter()
            batch = next(batches, None)
            data_seconds += time.perf_counter() - waited
            if batch is None:
                break
            loss, count = self.forward_backward(batch)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += float(loss.detach()) * count
            seen += count
            if bar is not None and task is not None:
                rate = seen * self.context.world_size / (time.perf_counter() - started)
                bar.update(
                    task,
                    advance=1,
                    info=f"loss {loss_sum / max(seen, 1):.4f} · {rate:.1f} images/s",
                )
            if self.on_step is not None:
                self.on_step(self.epoch, step)
        broadcast_buffers(self.context, self.model)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        loss_sum, seen_all = sum_across(self.context, loss_sum, float(seen))
        gathered = all_gather_objects(self.context, [s.__dict__ for s in skipped])
        refuse_nothing_read(int(seen_all), gathered, f"training split (epoch {self.epoch + 1})")
        record: dict[str, Any] = {
            "train_loss": loss_sum / max(seen_all, 1.0),
            "train_images_per_second": seen_all / seconds if seconds > 0 else None,
            "train_seconds": seconds,
            # time this process waited for the DataLoader; the rest is compute
            "train_data_seconds": round(data_seconds, 3),
            "train_data_wait_fraction": round(data_seconds / seconds, 4) if seconds > 0 else None,
            "skipped": [item for part in gathered for item in part],
        }
        if self.compiled is not None:
            record["compile"] = self.compiled.report()
        return record

    def write_outputs(self, improved: bool) -> None:
        if not self.context.is_main:
            return
        self.save_checkpoints(improved)
        skipped = [s for entry in self.history for s in entry.get("skipped", [])]
        atomic_write_text(
            self.out / "skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped)
        )
        summary = {
            "best_epoch": self.best_epoch,
            f"best_{self.score_key}": self.best_metric if self.best_epoch else None,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "history": [{k: v for k, v in e.items() if k != "skipped"} for e in self.history],
        }
        atomic_write_text(self.out / "metrics.json", json.dumps(summary, indent=2) + "\n")
        if self.finished or self.epoch % self.config.state_every == 0:
            # last: marks the epoch done (resuming from an earlier state repeats the epochs
            # after it, which on the same device give the same weights and outputs again)
            atomic_torch_save(self.state(), self.out / "state.pt")

    def run(self) -> None:
        bar = progress_bar() if self.progress and self.context.is_main else None
        with bar or contextlib.nullcontext():
            while not self.finished and self.epoch < self.config.epochs:
                started = time.perf_counter()
                record: dict[str, Any] = {
                    "epoch": self.epoch + 1,
                    "lr": self.optimizer.param_groups[0]["lr"],
                }
                record.update(self.train_epoch(bar))
                validation = self.validate()
                record["skipped"] = record["skipped"] + validation.pop("skipped", [])
                record.update(validation)
                record["epoch_seconds"] = time.perf_counter() - started
                self.epoch += 1
                self.history.append(record)
                metric = float(record[self.score_key])
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
                    bar.console.print(self.describe(record) + skipped_note(record))


def refuse_nothing_read(count: int, skipped: Sequence[Sequence[dict[str, str]]], what: str) -> None:
    """Stop when ``count`` images were used and every one read was unreadable
    (``skipped``, gathered from each process): a model is never trained or scored on
    nothing.

    :raises DollError: naming the split, how many were skipped and the first reason.
    """
    flat = [item for part in skipped for item in part]
    if count == 0 and flat:
        raise DollError(
            f"no image of the {what} could be read: all {len(flat)} were skipped (first: "
            f"{flat[0]['path']}: {flat[0]['reason']}); fix or remove them, or point the "
            "experiment at readable files"
        )


def skipped_note(record: dict[str, Any]) -> str:
    """``", N images skipped (…/skipped.jsonl)"`` for an epoch that skipped unreadable
    images (training and validation together), else ``""``."""
    count = len(record.get("skipped") or [])
    if not count:
        return ""
    return f", {count} image{'s' if count > 1 else ''} skipped (listed in skipped.jsonl)"


def tensor_digest(*trees: Any) -> str:
    """SHA-256 of every tensor in ``trees`` (nested dicts, lists and tuples, in key order)
    with its dtype and shape: a training state's weights and optimizer moments carry it,
    so that flipped bytes that still load are caught on resume."""
    digest = hashlib.sha256()

    def visit(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            flat = node.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{flat.dtype}{tuple(node.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            for key in sorted(node, key=str):
                digest.update(str(key).encode())
                visit(node[key])
        elif isinstance(node, list | tuple):
            for item in node:
                visit(item)
        else:
            digest.update(repr(node).encode())

    for tree in trees:
        visit(tree)
    return digest.hexdigest()


def run_training(
    trainer_factory: Callable[[], Trainer], config: Any, out: Path, resume: bool
) -> Trainer:
    """Create the trainer, restore ``out`` when resuming, run it, leave the process group."""
    state_path = out / "state.pt"
    if state_path.exists() and not resume:
        raise DollError(
            f"{out} already holds a training run; pass --resume to continue it "
            "or choose another --out"
        )
    trainer = trainer_factory()
    try:
        if state_path.exists():
            trainer.restore(state_path)
        elif trainer.context.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                out / "config.json", json.dumps(config.to_record(out), indent=2) + "\n"
            )
        trainer.run()
    finally:
        cleanup_distributed(trainer.context)
    return trainer
