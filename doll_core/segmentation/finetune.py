"""Fine-tuning on a downstream segmentation task with few labels.

Initialisation: ``random``; ``classifier`` (encoder from a classifier checkpoint, decoder
random: the analogue of ImageNet backbone pre-training); ``doll`` (encoder and decoder from
DoLL pre-training, new output layer); ``checkpoint`` (any user state dict, with a report of
which keys loaded). Modes: ``full``, ``frozen_encoder``, ``adapter_only`` (only the new
output layer, and optional residual adapter blocks, train); pre-trained parts can get a
smaller learning rate. An "epoch" is ``eval_interval`` optimiser steps, so the validation
history is the convergence curve; ``test.json`` holds the best model's test scores.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import Sampler, Subset

from doll_core.atomic import atomic_write_text
from doll_core.checkpoint import load_classifier
from doll_core.data.cache import CachedSamples
from doll_core.data.samples import SkippedSample, collate_samples
from doll_core.errors import DollError
from doll_core.home import expand_home
from doll_core.interfaces import optional_member
from doll_core.metrics.segmentation import SegmentationScores
from doll_core.registry import Registry, get_registry
from doll_core.relocation import portable
from doll_core.segmentation.config import FinetuneConfig
from doll_core.segmentation.losses import soft_dice_loss, weighted_bce
from doll_core.segmentation.models import (
    Segmenter,
    SegmenterMeta,
    build_segmenter,
    load_segmenter,
    load_user_weights,
    save_segmenter,
)
from doll_core.segmentation.splits import task_datasets
from doll_core.training.distributed import DistributedContext, all_gather_objects, sum_across
from doll_core.training.loop import (
    StepCallback,
    Trainer,
    parameter_groups,
    refuse_nothing_read,
    run_training,
)
from doll_core.transfer import load_classifier_into_encoder


class EpochSampler(Sampler[int]):
    """``per_epoch`` indices per rank and epoch from a seeded permutation of ``size``
    items, repeated as needed (few labels, many steps), sharded by rank."""

    def __init__(self, size: int, per_epoch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.per_epoch, self.seed, self.rank, self.world = (
            size,
            per_epoch,
            seed,
            rank,
            world,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        needed = self.per_epoch * self.world
        order: list[int] = []
        while len(order) < needed:
            order += torch.randperm(self.size, generator=generator).tolist()
        return iter(order[self.rank : needed : self.world])

    def __len__(self) -> int:
        return self.per_epoch


class FinetuneTrainer(Trainer):
    score_key = "val_miou"

    def __init__(
        self,
        config: FinetuneConfig,
        out: Path,
        registry: Registry,
        progress: bool = False,
        on_step: StepCallback | None = None,
    ) -> None:
        if config.augment.enabled:
            raise DollError("augmentation is not available for segmentation stages yet")
        self.registry = registry
        self.init_report: dict[str, Any] = {}
        super().__init__(config, out, progress, on_step)

    # ------------------------------------------------------------------ data
    def setup(self) -> None:
        config: FinetuneConfig = self.config
        (pool, self.val_set, self.test_set), self.split = task_datasets(config, self.registry)
        if self.context.is_main:
            atomic_write_text(self.out / "split.json", json.dumps(self.split.record(), indent=1))
        if config.n_labeled is not None:
            if config.n_labeled > len(pool):
                raise DollError(
                    f"n_labeled={config.n_labeled} but only {len(pool)} training "
                    "images are available"
                )
            chosen = torch.randperm(
                len(pool), generator=torch.Generator().manual_seed(config.seed)
            ).tolist()[: config.n_labeled]
            pool = Subset(pool, sorted(chosen))
        self.train_set = pool
        base = pool.dataset if isinstance(pool, Subset) else pool
        while isinstance(base, Subset):
            base = base.dataset
        self.classes = list(optional_member(base, "dataset", "classes") or ["foreground"])
        if config.cache_samples:
            self.train_set = CachedSamples(self.train_set)
            self.val_set = CachedSamples(self.val_set)
        self.model = self._initial_model()

    def _initial_model(self) -> Segmenter:
        config: FinetuneConfig = self.config
        classes = len(self.classes)
        meta = SegmenterMeta(
            head=config.head,
            head_params=dict(config.head_params),
            encoder=config.encoder,
            classes=tuple(self.classes),
            in_channels=config.in_channels,
            image_size=config.image_size,
            mean=tuple(config.mean),
            std=tuple(config.std),
            stage="finetune",
            adapter_blocks=config.adapter_blocks,
            training_config=config.to_record(self.out),
        )
        if config.init == "doll":
            assert config.init_path is not None
            model, pretrained = load_segmenter(config.init_path, self.registry)
            if pretrained.in_channels != config.in_channels:
                raise DollError(
                    f"{config.init_path} takes {pretrained.in_channels} channels, "
                    f"the task {config.in_channels}"
                )
            model.replace_output(classes, adapter=config.adapter_blocks, seed=config.seed)
            self.meta = replace(
                meta,
                head=pretrained.head,
                head_params=pretrained.head_params,
                encoder=pretrained.encoder,
                mean=pretrained.mean,
                std=pretrained.std,
            )
            self.init_report = {"init": "doll", "from": str(config.init_path.absolute())}
            return model
        if config.init == "classifier":
            assert config.init_path is not None
            classifier, cmeta = load_classifier(
                config.init_path, registry=self.registry, in_channels=config.in_channels
            )
            backbone = self.registry.create("backbone", cmeta.backbone, **cmeta.backbone_params)
            encoder = optional_member(backbone, "backbone", "encoder_name") or config.encoder
            meta = replace(meta, encoder=encoder, mean=cmeta.mean, std=cmeta.std)
            model = build_segmenter(meta, self.registry)
            load_classifier_into_encoder(model.net, classifier.net, backbone, encoder=encoder)
            self.init_report = {"init": "classifier", "from": str(config.init_path.absolute())}
        else:
            model = build_segmenter(meta, self.registry)
            if config.init == "checkpoint":
                assert config.init_path is not None
                self.init_report = {
                    "init": "checkpoint",
                    "from": str(config.init_path.absolute()),
                    **load_user_weights(
                        model, config.init_path, allow_partial=config.allow_partial
                    ),
                }
            else:
                self.init_report = {"init": "random"}
        self.meta = meta
        return model

    def make_sampler(self) -> Sampler[int]:
        return EpochSampler(
            len(self.train_set),
            self.config.eval_interval * self.config.batch_size,
            self.config.seed,
            self.context.rank,
            self.context.world_size,
        )

    # ------------------------------------------------------------------ parameters
    def _frozen(self) -> set[int]:
        model = cast(Segmenter, self.model)
        if self.config.mode == "frozen_encoder":
            return {id(p) for p in model.encoder.parameters()}
        if self.config.mode == "adapter_only":
            head = {id(p) for p in model.head_parameters()}
            return {id(p) for p in model.parameters() if id(p) not in head}
        return set()

    def parameter_groups(self) -> list[dict[str, Any]]:
        config: FinetuneConfig = self.config
        model = cast(Segmenter, self.model)
        frozen = self._frozen()
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) not in frozen)
        pretrained: set[int] = set()
        if config.init in ("classifier", "checkpoint", "doll"):
            pretrained |= {id(p) for p in model.encoder.parameters()}
        if config.init == "doll":
            pretrained |= {id(p) for p in model.decoder_parameters()}
        slow = [p for p in model.parameters() if id(p) in pretrained and p.requires_grad]
        fast = [p for p in model.parameters() if id(p) not in pretrained and p.requires_grad]
        return parameter_groups(
            slow, config.weight_decay, config.lr * config.pretrained_lr_multiplier
        ) + parameter_groups(fast, config.weight_decay, config.lr)

    def after_train_mode(self) -> None:
        model = cast(Segmenter, self.model)
        if self.config.mode == "frozen_encoder":
            model.encoder.eval()
        elif self.config.mode == "adapter_only":
            model.net.eval()
            model.output_layer().train()

    # ------------------------------------------------------------------ steps
    def training_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        if not batch:
            raise DollError("a whole fine-tuning batch was unreadable")
        images = self.to_device(batch["image"], image=True)
        mask = self.to_device(batch["mask"])
        weight = self.to_device(batch["mask_weight"]) if "mask_weight" in batch else None
        with self.autocast():
            logits = self.trained(images)
        loss = weighted_bce(logits, mask, weight)
        if self.config.dice_weight > 0:
            dice = soft_dice_loss(logits, mask, weight=weight)
            loss = loss + self.config.dice_weight * dice
        return loss, len(images)

    @torch.no_grad()
    def evaluate(
        self, dataset: Any, model: torch.nn.Module, *, per_image: bool = False
    ) -> tuple[dict[str, Any], list[SkippedSample]]:
        """Dataset-level IoU and Dice (see :mod:`doll_core.metrics.segmentation`); with
        ``per_image``, also every image's sums under ``"per_image"``
        (:meth:`~doll_core.metrics.segmentation.SegmentationScores.per_image`)."""
        model.eval()
        shard = Subset(
            dataset, list(range(self.context.rank, len(dataset), self.context.world_size))
        )
        loader = torch.utils.data.DataLoader(
            shard, batch_size=self.config.batch_size, collate_fn=collate_samples
        )
        scores = SegmentationScores(self.classes)
        skipped: list[SkippedSample] = []
        read = 0
        for batch in self.iterate(loader, skipped):
            if not batch:
                continue
            read += len(batch["image"])
            with self.autocast():
                logits = model(self.to_device(batch["image"], image=True)).float()
            weight = self.to_device(batch["mask_weight"]) if "mask_weight" in batch else None
            ids = batch["id"] if per_image else None
            scores.update(logits > 0, self.to_device(batch["mask"]) > 0.5, weight, ids)
        (read_all,) = sum_across(self.context, float(read))
        gathered = all_gather_objects(self.context, [s.__dict__ for s in skipped])
        refuse_nothing_read(int(read_all), gathered, "validation or test split")
        total = SegmentationScores(self.classes)
        for part in all_gather_objects(self.context, scores):
            total.merge(part)
        summary = total.summary()
        if per_image:
            summary["per_image"] = total.per_image()
        return summary, skipped

    def validate(self) -> dict[str, Any]:
        started = time.perf_counter()
        summary, skipped = self.evaluate(self.val_set, self.model)
        gathered = all_gather_objects(self.context, [s.__dict__ for s in skipped])
        return {
            "val_miou": summary["miou"],
            "val_mdice": summary["mdice"],
            "val_iou": summary["iou"],
            "val_dice": summary["dice"],
            "step": self.epoch * self.steps_per_epoch + self.steps_per_epoch,
            "val_seconds": time.perf_counter() - started,
            "skipped": [item for part in gathered for item in part],
        }

    def save_checkpoints(self, improved: bool) -> None:
        record = self.history[-1]
        meta = replace(self.meta, scores={"epoch": self.epoch, "val_miou": record["val_miou"]})
        if improved:
            save_segmenter(self.out / "best.pt", cast(Segmenter, self.model), meta)
        if self.epoch == 1:
            atomic_write_text(
                self.out / "init.json",
                json.dumps(portable(self.init_report, self.out), indent=2) + "\n",
            )

    def describe(self, record: dict[str, Any]) -> str:
        return (
            f"step {record['step']}: train loss {record['train_loss']:.4f}, val mIoU "
            f"{record['val_miou']:.4f}, val mDice {record['val_mdice']:.4f}"
        )


def finetune(
    config: FinetuneConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Fine-tune into ``out``; returns (and writes to ``test.json``) the best model's test
    scores with the validation curve and the test images that could not be read
    (``skipped``; training and validation ones are in ``skipped.jsonl``)."""
    out = expand_home(out, "output folder")
    registry = registry or get_registry()
    trainer = cast(
        FinetuneTrainer,
        run_training(
            lambda: FinetuneTrainer(config, out, registry, progress, on_step), config, out, resume
        ),
    )
    is_main = trainer.context.is_main
    trainer.context = DistributedContext()  # the process group is gone: test locally
    best, _ = load_segmenter(out / "best.pt", registry)
    best = best.to(trainer.device)
    test, test_skipped = trainer.evaluate(trainer.test_set, best, per_image=True)
    result = {
        "test": test,
        "skipped": [s.__dict__ for s in test_skipped],  # unreadable test images
        "best_epoch": trainer.best_epoch,
        "curve": [
            {"step": e["step"], "val_miou": e["val_miou"], "val_mdice": e["val_mdice"]}
            for e in trainer.history
        ],
        "train_images": len(trainer.train_set),
        "init": trainer.init_report,
    }
    if is_main:
        atomic_write_text(out / "test.json", json.dumps(portable(result, out), indent=2) + "\n")
    return result
