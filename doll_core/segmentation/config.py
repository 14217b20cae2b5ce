"""Configurations of the segmentation stages: settings (what a user writes) and inputs
(what the runner supplies), as in :mod:`doll_core.training.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from doll_core.configuration import NEVER_IN_KEY
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

    head: str = Field("unet", description="the segmentation head plugin (decoder)")
    head_params: dict[str, Any] = Field(
        default_factory=dict,
        description="the head plugin's parameters",
    )
    augment: AugmentConfig = Field(
        NO_AUGMENT,
        description="augmentation of images and masks together (off by default)",
    )


class PretrainSettings(SegmentationSettings, Seeded):
    """DoLL pre-training of a whole segmentation model on a label store."""

    encoder: str | None = Field(None, description="default: the classifier's encoder")
    threshold: float | None = Field(None, ge=0, le=1, description="binarise labels; None = soft")
    background_weight: float = Field(
        0.1,
        ge=0,
        le=1,
        description="loss weight of pixels no label marks",
    )
    dice_weight: float = Field(0.0, ge=0, description="add soft Dice with this weight")
    val_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="share of the label store held out to pick the best epoch",
    )


class PretrainInputs(StageInputs):
    labels: Path = Field(
        description="the label store (a stage input: its stage's key enters the inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )
    data: Path | None = Field(
        None,
        description="dataset root (default: the store's)",
        json_schema_extra=NEVER_IN_KEY,
    )
    encoder_from: Path | None = Field(
        None,
        description="classifier checkpoint whose weights start the encoder (a stage input: "
        "its stage's key enters the inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )


class PretrainConfig(PretrainSettings, PretrainInputs):
    """Everything that determines a pre-training run."""


class FinetuneSettings(SegmentationSettings):
    """Fine-tuning on a downstream segmentation task with few labels."""

    train_split: str = Field("Train", description="splits = 'folders': the reader's training split")
    val_split: str = Field("Val", description="splits = 'folders': the reader's validation split")
    test_split: str = Field("Test", description="splits = 'folders': the reader's test split")
    val_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="random or patient splits: share of images for validation",
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="random or patient splits: share of images for testing",
    )
    encoder: str = Field(
        "resnet18",
        description="the encoder (an smp encoder name, or a classifier's)",
    )
    mode: Literal["full", "frozen_encoder", "adapter_only"] = Field(
        "full",
        description="what trains: the whole model, all but the encoder, or only adapters",
    )
    adapter_blocks: bool = Field(
        False,
        description="insert adapter blocks after the encoder's stages",
    )
    pretrained_lr_multiplier: float = Field(
        1.0,
        gt=0,
        le=1,
        description="learning rate of pre-trained weights, as a multiple of lr",
    )
    eval_interval: int = Field(10, ge=1, description="optimiser steps between validations")
    dice_weight: float = Field(
        1.0,
        ge=0,
        description="weight of the soft Dice loss beside cross-entropy",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="validations without improvement before stopping; None = never",
    )
    cache_samples: bool = Field(
        False,
        description="keep training and validation samples in memory after one read",
        json_schema_extra=NEVER_IN_KEY,
    )
    allow_partial: bool = Field(
        False,
        description="init 'checkpoint': start from a file that fits fewer than "
        "MIN_LOADED_FRACTION of the model's tensors (it decides whether a run starts, "
        "not what it computes)",
        json_schema_extra=NEVER_IN_KEY,
    )


class FinetuneInputs(Seeded, StageInputs):
    """What the runner supplies to one fine-tuning run of a grid."""

    data: Path = Field(
        description="the task's folder (a stage input: its resolved path, or the phantom "
        "stage's key, enters the inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )
    dataset: str = Field("segfolder", description="the segmentation reader plugin")
    dataset_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the reader's options",
    )
    splits: Literal["random", "patients", "file", "folders"] = Field(
        "random", description="how the task is divided (doll_core.segmentation.splits)"
    )
    split_file: Path | None = Field(
        None,
        description="splits = 'file': a CSV of image (stem) and split [and patient] (the "
        "split it makes enters the inputs, not its path)",
        json_schema_extra=NEVER_IN_KEY,
    )
    patient_file: Path | None = Field(
        None,
        description="a CSV of image (stem) and patient: the patient of each image (the "
        "split it makes enters the inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )
    patient_column: str = Field(
        "patient",
        description="patient_file's column of patients (the split it makes enters the inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )
    patient_pattern: str | None = Field(
        None,
        description="a regex over the image id whose first group is the patient (the split "
        "it makes enters the inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )
    n_labeled: int | None = Field(None, ge=1, description="training images used; None = all")
    init: Literal["random", "classifier", "doll", "checkpoint"] = Field(
        "random",
        description="where the weights start: random, classifier, doll or checkpoint",
    )
    init_path: Path | None = Field(
        None,
        description="the checkpoint init starts from (a stage input: its stage's key, or "
        "the file's SHA-256, enters the inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )


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
