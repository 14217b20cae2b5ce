"""Configurations of the segmentation stages: settings (what a user writes) and inputs
(what the runner supplies), as in :mod:`doll_core.training.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from doll_core.segmentation.splits import SplitSpec
from doll_core.training.config import (
    AugmentConfig,
    ImageSettings,
    LoopSettings,
    Seeded,
    StageInputs,
)

#: Segmentation augmentation moves images and masks together; brightness/contrast only
#: on images. Off by default for masks' sake in the first release.
NO_AUGMENT = AugmentConfig(enabled=False)


class SegmentationSettings(LoopSettings, ImageSettings):
    """What every segmentation stage shares: the seg-head plugin and its options."""

    head: str = "unet"
    head_params: dict[str, Any] = Field(default_factory=dict)
    augment: AugmentConfig = NO_AUGMENT


class PretrainSettings(SegmentationSettings, Seeded):
    """DoLL pre-training of a whole segmentation model on a label store."""

    encoder: str | None = Field(None, description="default: the classifier's encoder")
    threshold: float | None = Field(None, ge=0, le=1, description="binarise labels; None = soft")
    background_weight: float = Field(0.1, ge=0, le=1)
    dice_weight: float = Field(0.0, ge=0, description="add soft Dice with this weight")
    val_fraction: float = Field(0.1, gt=0, lt=1)


class PretrainInputs(StageInputs):
    labels: Path = Field(description="the label store")
    data: Path | None = Field(None, description="dataset root (default: the store's)")
    encoder_from: Path | None = Field(
        None, description="classifier checkpoint whose weights start the encoder"
    )


class PretrainConfig(PretrainSettings, PretrainInputs):
    """Everything that determines a pre-training run."""


class FinetuneSettings(SegmentationSettings):
    """Fine-tuning on a downstream segmentation task with few labels."""

    train_split: str = "Train"
    val_split: str = "Val"
    test_split: str = "Test"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    encoder: str = "resnet18"
    mode: Literal["full", "frozen_encoder", "adapter_only"] = "full"
    adapter_blocks: bool = False
    pretrained_lr_multiplier: float = Field(1.0, gt=0, le=1)
    eval_interval: int = Field(10, ge=1, description="optimiser steps between validations")
    dice_weight: float = Field(1.0, ge=0)
    early_stopping_patience: int | None = Field(None, ge=1)
    cache_samples: bool = Field(
        False, description="keep training and validation samples in memory after one read"
    )
    allow_partial: bool = Field(
        False,
        description="init 'checkpoint': start from a file that fits fewer than "
        "MIN_LOADED_FRACTION of the model's tensors",
    )


class FinetuneInputs(Seeded, StageInputs):
    """What the runner supplies to one fine-tuning run of a grid."""

    data: Path
    dataset: str = "segfolder"
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    splits: Literal["random", "patients", "file", "folders"] = Field(
        "random", description="how the task is divided (doll_core.segmentation.splits)"
    )
    split_file: Path | None = Field(
        None, description="splits = 'file': a CSV of image (stem) and split [and patient]"
    )
    patient_file: Path | None = Field(
        None, description="a CSV of image (stem) and patient: the patient of each image"
    )
    patient_column: str = Field("patient", description="patient_file's column of patients")
    patient_pattern: str | None = Field(
        None, description="a regex over the image id whose first group is the patient"
    )
    n_labeled: int | None = Field(None, ge=1, description="training images used; None = all")
    init: Literal["random", "classifier", "doll", "checkpoint"] = "random"
    init_path: Path | None = None


class FinetuneConfig(FinetuneSettings, FinetuneInputs):
    """Everything that determines a fine-tuning run."""

    def split_spec(self) -> SplitSpec:
        """How this run's task is divided."""
        return SplitSpec(
            mode=self.splits,
            split_file=self.split_file,
            patient_file=self.patient_file,
            patient_column=self.patient_column,
            patient_pattern=self.patient_pattern,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
        )

    @model_validator(mode="after")
    def _init_needs_a_path(self) -> FinetuneConfig:
        if self.init != "random" and self.init_path is None:
            raise ValueError(f"init {self.init!r} needs init_path")
        return self

    @model_validator(mode="after")
    def _usable_split(self) -> FinetuneConfig:
        problems = self.split_spec().problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self
