"""The classifier-training configuration (validated with pydantic, unknown keys refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AugmentConfig(BaseModel):
    """Augmentation suited to radiographs: a small affine and brightness/contrast. No
    horizontal flip by default, since anatomy is lateralised (the heart is on the left)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    rotate_degrees: float = Field(7.0, ge=0, le=45)
    translate: float = Field(0.05, ge=0, le=0.5, description="fraction of the image side")
    scale: tuple[float, float] = (0.92, 1.08)
    brightness: float = Field(0.08, ge=0, le=1)
    contrast: float = Field(0.15, ge=0, le=1)
    hflip: bool = False


class LoopConfig(BaseModel):
    """The fields every training stage shares (see :mod:`doll_core.training.loop`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    early_stopping_patience: int | None = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0
    num_workers: int = Field(2, ge=0)
    device: str = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool = Field(
        False, description="torch.compile the model (opt-in; compile time reported, eager fallback)"
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="for quick checks")
    on_error: Literal["skip", "fail"] = "skip"

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings), for checkpoints and run folders."""
        return self.model_dump(mode="json")


class ClassifierTrainingConfig(LoopConfig):
    """Everything that determines a classifier-training run."""

    data: Path = Field(description="dataset root, e.g. the folder holding CheXpert-v1.0-small")
    dataset: str = "chexpert"
    dataset_options: dict[str, Any] = Field(
        default_factory=dict, description="reader options, e.g. uncertainty, frontal_only"
    )
    train_split: str = "train"
    val_split: str = "valid"
    backbone: str = "tiny_cnn"
    backbone_params: dict[str, Any] = Field(default_factory=dict)
    image_size: int = Field(128, ge=16, le=2048)
    in_channels: Literal[1, 3] = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)

    @model_validator(mode="after")
    def _normalisation_fits_channels(self) -> ClassifierTrainingConfig:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) == 1 and self.in_channels == 3:
                object.__setattr__(self, name, values * 3)
            elif len(values) != self.in_channels:
                raise ValueError(f"{name} needs {self.in_channels} value(s), got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self
