"""DoLL pre-training: a whole segmentation model (encoder and decoder) learns the label
store's maps, one output channel per observation, on the shared training loop."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import Subset

from doll_core.checkpoint import load_classifier
from doll_core.data.decoded import attach_image_cache
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError
from doll_core.home import expand_home
from doll_core.interfaces import optional_member
from doll_core.labels.dataset import LabeledImages
from doll_core.observations import OBSERVATIONS
from doll_core.registry import Registry, get_registry
from doll_core.segmentation.config import PretrainConfig
from doll_core.segmentation.losses import soft_dice_loss, weighted_bce
from doll_core.segmentation.models import (
    Segmenter,
    SegmenterMeta,
    build_segmenter,
    save_segmenter,
)
from doll_core.segmentation.splits import seeded_split as split_indices
from doll_core.training.distributed import all_gather_objects
from doll_core.training.loop import StepCallback, Trainer, run_training
from doll_core.transfer import load_classifier_into_encoder


class PretrainTrainer(Trainer):
    score_key = "val_soft_dice"

    def __init__(
        self,
        config: PretrainConfig,
        out: Path,
        registry: Registry,
        progress: bool = False,
        on_step: StepCallback | None = None,
    ) -> None:
        if config.augment.enabled:
            raise DollError("augmentation is not available for segmentation stages yet")
        self.registry = registry
        super().__init__(config, out, progress, on_step)

    def setup(self) -> None:
        config: PretrainConfig = self.config
        mean, std, encoder = tuple(config.mean), tuple(config.std), config.encoder
        classifier = backbone = None
        if config.encoder_from is not None:
            classifier, cmeta = load_classifier(
                config.encoder_from, registry=self.registry, in_channels=config.in_channels
            )
            backbone = self.registry.create("backbone", cmeta.backbone, **cmeta.backbone_params)
            encoder = encoder or optional_member(backbone, "backbone", "encoder_name")
            mean, std = cmeta.mean, cmeta.std  # the encoder's weights expect its inputs
        if encoder is None:
            raise DollError("pre-training needs encoder= or encoder_from= (a classifier)")
        labelled = LabeledImages(
            config.labels,
            data=config.data,
            size=config.image_size,
            threshold=config.threshold,
            background_weight=config.background_weight,
            registry=self.registry,
        )
        attach_image_cache(labelled.dataset, config.image_cache)
        train, held = split_indices(len(labelled), config.val_fraction, seed=0)
        self.train_set, self.val_set = Subset(labelled, train), Subset(labelled, held)
        self.meta = SegmenterMeta(
            head=config.head,
            head_params=dict(config.head_params),
            encoder=encoder,
            classes=OBSERVATIONS,
            in_channels=config.in_channels,
            image_size=config.image_size,
            mean=mean,
            std=std,
            stage="pretrain",
            training_config=config.to_record(self.out),
        )
        self.model = build_segmenter(self.meta, self.registry)
        if classifier is not None and backbone is not None:
            load_classifier_into_encoder(
                cast(Segmenter, self.model).net, classifier.net, backbone, encoder=encoder
            )

    def _loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        loss = weighted_bce(logits, target, weight)
        if self.config.dice_weight > 0:
            loss = loss + self.config.dice_weight * soft_dice_loss(logits, target)
        return loss

    def training_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        if not batch:
            raise DollError("a whole pre-training batch was unreadable")
        images = self.to_device(batch["image"], image=True)
        with self.autocast():
            logits = self.trained(images)
        target, weight = self.to_device(batch["target"]), self.to_device(batch["weight"])
        return self._loss(logits, target, weight), len(images)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        self.model.eval()
        skipped: list[SkippedSample] = []
        loss_sum, dice_sum, dice_count, seen = 0.0, 0.0, 0, 0
        started = time.perf_counter()
        for batch in self.iterate(self.val_loader, skipped):
            if not batch:
                continue
            images = self.to_device(batch["image"], image=True)
            target, weight = self.to_device(batch["target"]), self.to_device(batch["weight"])
            with self.autocast():
                logits = self.model(images).float()
            loss_sum += float(self._loss(logits, target, weight)) * len(images)
            seen += len(images)
            present = target.flatten(2).amax(dim=2) > 0  # [B, 14] maps that hold a label
            if present.any():
                probabilities = torch.sigmoid(logits)
                intersection = (probabilities * target).sum(dim=(2, 3))
                total = probabilities.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
                dice = (2 * intersection / total.clamp(min=1e-6))[present]
                dice_sum += float(dice.sum())
                dice_count += int(present.sum())
        parts = all_gather_objects(self.context, (loss_sum, seen, dice_sum, dice_count))
        loss_sum, seen = sum(p[0] for p in parts), sum(p[1] for p in parts)
        dice_sum, dice_count = sum(p[2] for p in parts), sum(p[3] for p in parts)
        gathered = all_gather_objects(self.context, [s.__dict__ for s in skipped])
        return {
            "val_loss": loss_sum / max(seen, 1),
            "val_soft_dice": dice_sum / dice_count if dice_count else math.nan,
            "val_images": seen,
            "val_seconds": time.perf_counter() - started,
            "skipped": [item for part in gathered for item in part],
        }

    def save_checkpoints(self, improved: bool) -> None:
        record = self.history[-1]
        meta = replace(
            self.meta,
            scores={
                "epoch": self.epoch,
                "val_loss": record["val_loss"],
                "val_soft_dice": record["val_soft_dice"],
            },
        )
        model = cast(Segmenter, self.model)
        if improved:
            save_segmenter(self.out / "best.pt", model, meta)
        save_segmenter(self.out / "last.pt", model, meta)

    def describe(self, record: dict[str, Any]) -> str:
        return (
            f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, val loss "
            f"{record['val_loss']:.4f}, val soft Dice {record['val_soft_dice']:.4f}, "
            f"{record['train_images_per_second']:.1f} images/s"
        )


def pretrain(
    config: PretrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
    registry: Registry | None = None,
) -> PretrainTrainer:
    """DoLL pre-training into the run folder ``out`` (``best.pt``: the whole model)."""
    out = expand_home(out, "output folder")
    trainer = run_training(
        lambda: PretrainTrainer(config, out, registry or get_registry(), progress, on_step),
        config,
        out,
        resume,
    )
    return cast(PretrainTrainer, trainer)
