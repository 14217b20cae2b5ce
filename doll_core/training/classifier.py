"""The classifier-training stage: any backbone plugin, the 14 CheXpert observations.

Multi-label BCE with the label mask, radiograph augmentation, validation every epoch with
per-observation and mean AUROC (the score that selects ``best.pt``), on the shared
training loop (:mod:`doll_core.training.loop`: AMP, DDP, resume after kill, progress).
The run folder holds ``best.pt`` and ``last.pt`` (classifier checkpoints, see
:mod:`doll_core.checkpoint`) besides the loop's files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from doll_core.atomic import atomic_write_text
from doll_core.checkpoint import (
    ClassifierMeta,
    build_classifier,
    save_classifier,
    unavailable_outputs,
)
from doll_core.data.decoded import attach_image_cache
from doll_core.data.samples import SkippedSample
from doll_core.home import expand_home
from doll_core.metrics import masked_auroc_per_class
from doll_core.models import Classifier
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from doll_core.registry import Registry, get_registry
from doll_core.training.augment import augment_batch
from doll_core.training.config import ClassifierTrainingConfig
from doll_core.training.distributed import all_gather_objects, cleanup_distributed
from doll_core.training.loop import (
    StepCallback,
    Trainer,
    refuse_nothing_read,
    resolve_device,
    run_training,
)
from doll_core.training.losses import masked_bce_with_logits

__all__ = [
    "ClassifierTrainer",
    "TrainResult",
    "package_classifier",
    "resolve_device",
    "train_classifier",
]


@dataclass
class TrainResult:
    """What a finished run returns (also on ranks other than 0)."""

    model: Classifier
    out: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_mean_auroc: float = math.nan
    stopped_early: bool = False


class ClassifierTrainer(Trainer):
    score_key = "mean_auroc"
    #: a state is only ever written by training (``train`` true, or unset before DoLL 0.2)
    resumable_changes = Trainer.resumable_changes | {"train"}

    def __init__(
        self,
        config: ClassifierTrainingConfig,
        out: Path,
        registry: Registry,
        progress: bool = False,
        on_step: StepCallback | None = None,
    ) -> None:
        self.registry = registry
        super().__init__(config, out, progress, on_step)

    def setup(self) -> None:
        config: ClassifierTrainingConfig = self.config
        common = {
            "size": config.image_size,
            "grayscale": config.in_channels == 1,
            "on_error": config.on_error,
            **config.dataset_options,
        }
        self.train_set = self.registry.create(
            "dataset", config.dataset, root=config.data, split=config.train_split, **common
        )
        self.val_set = self.registry.create(
            "dataset", config.dataset, root=config.data, split=config.val_split, **common
        )
        for dataset in (self.train_set, self.val_set):
            attach_image_cache(dataset, config.image_cache)
        unavailable = unavailable_outputs(config.backbone, config.backbone_params, self.registry)
        #: bool [14]: the observations the model has an output for
        self.available = torch.tensor([name not in unavailable for name in OBSERVATIONS])
        self.meta = ClassifierMeta(
            unavailable=unavailable,
            backbone=config.backbone,
            backbone_params=dict(config.backbone_params),
            in_channels=config.in_channels,
            image_size=config.image_size,
            mean=tuple(config.mean),
            std=tuple(config.std),
            training_config=config.to_record(self.out),
        )
        self.model = build_classifier(self.meta, self.registry)

    def _tensors(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not batch:  # every image of the batch was unreadable: a no-op step keeps ranks in step
            size = self.config.image_size
            return (
                torch.zeros(1, self.config.in_channels, size, size, device=self.device),
                torch.zeros(1, NUM_OBSERVATIONS, device=self.device),
                torch.zeros(1, NUM_OBSERVATIONS, dtype=torch.bool, device=self.device),
            )
        return (
            self.to_device(batch["image"], image=True),
            self.to_device(batch["labels"]),
            self.to_device(batch["label_mask"] & self.available),
        )

    def training_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        images, labels, mask = self._tensors(batch)
        images = augment_batch(images, self.config.augment, self.augment_rng)
        with self.autocast():
            logits = self.trained(images)
        return masked_bce_with_logits(logits, labels, mask), len(images) if batch else 0

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        self.model.eval()
        skipped: list[SkippedSample] = []
        probabilities, labels, masks = [], [], []
        started = time.perf_counter()
        for batch in self.iterate(self.val_loader, skipped):
            if not batch:
                continue
            images, batch_labels, batch_mask = self._tensors(batch)
            with self.autocast():
                logits = self.model(images)
            probabilities.append(torch.sigmoid(logits.float()).cpu())
            labels.append(batch_labels.cpu())
            masks.append(batch_mask.cpu())
        empty = torch.zeros(0, NUM_OBSERVATIONS)
        probs, truth, counted = self.gather(
            [
                torch.cat(probabilities) if probabilities else empty,
                torch.cat(labels) if labels else empty,
                torch.cat(masks) if masks else empty.bool(),
            ]
        )
        scores = masked_auroc_per_class(probs, truth, counted)
        defined = [s for s in scores if not math.isnan(s)]
        logit = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
        gathered = all_gather_objects(self.context, [s.__dict__ for s in skipped])
        refuse_nothing_read(int(probs.shape[0]), gathered, "validation split")
        return {
            "val_loss": float(masked_bce_with_logits(logit, truth, counted)),
            "mean_auroc": sum(defined) / len(defined) if defined else math.nan,
            "auroc": {
                n: (None if math.isnan(s) else round(s, 6))
                for n, s in zip(OBSERVATIONS, scores, strict=True)
            },
            "val_images": int(probs.shape[0]),
            "val_seconds": time.perf_counter() - started,
            "skipped": [item for part in gathered for item in part],
        }

    def save_checkpoints(self, improved: bool) -> None:
        last = self.history[-1]
        meta = ClassifierMeta(
            **{**self.meta.__dict__, "val_auroc": dict(last["auroc"]), "epoch": self.epoch}
        )
        model = cast(Classifier, self.model)
        if improved:
            save_classifier(self.out / "best.pt", model, meta)
        save_classifier(self.out / "last.pt", model, meta)

    def describe(self, record: dict[str, Any]) -> str:
        return (
            f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
            f"val loss {record['val_loss']:.4f}, mean AUROC {record['mean_auroc']:.4f}, "
            f"{record['train_images_per_second']:.1f} images/s"
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
    out = expand_home(out, "output folder")
    trainer = run_training(
        lambda: ClassifierTrainer(config, out, registry or get_registry(), progress, on_step),
        config,
        out,
        resume,
    )
    return TrainResult(
        model=cast(Classifier, trainer.model),
        out=out,
        history=trainer.history,
        best_epoch=trainer.best_epoch,
        best_mean_auroc=trainer.best_metric if trainer.best_epoch else math.nan,
        stopped_early=trainer.stopped_early,
    )


def package_classifier(
    config: ClassifierTrainingConfig,
    out: str | Path,
    *,
    registry: Registry | None = None,
) -> TrainResult:
    """A classifier used as its backbone gives it (``train = false``: a torchxrayvision
    model with its weights), written into ``out`` as a trained one is: validated once on
    the validation split (its AUROC per observation, which ``auc_weighted`` fusion weighs
    by), ``best.pt`` and ``last.pt`` (epoch 0), ``config.json`` and ``metrics.json``.
    Nothing is trained, so the same config gives the same files."""
    out = expand_home(out, "output folder")
    out.mkdir(parents=True, exist_ok=True)
    trainer = ClassifierTrainer(config, out, registry or get_registry())
    try:
        validation = trainer.validate()
        skipped = validation.pop("skipped", [])
        trainer.history.append({"epoch": 0, **validation})
        trainer.finished = True
        if trainer.context.is_main:
            trainer.save_checkpoints(improved=True)
            atomic_write_text(
                out / "config.json", json.dumps(config.to_record(out), indent=2) + "\n"
            )
            atomic_write_text(out / "skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped))
            summary = {"best_epoch": 0, "best_mean_auroc": validation["mean_auroc"],
                       "finished": True, "trained": False, "history": trainer.history}  # fmt: skip
            atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    finally:
        cleanup_distributed(trainer.context)
    return TrainResult(
        model=cast(Classifier, trainer.model),
        out=out,
        history=trainer.history,
        best_epoch=0,
        best_mean_auroc=float(validation["mean_auroc"]),
    )
