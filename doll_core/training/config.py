"""The classifier-training configuration (validated with pydantic, unknown keys refused).

Every stage configuration is split in two: its *settings* (the keys a user writes in an
experiment file, each default stated once, in its field) and its *inputs* (what the
experiment runner supplies: data paths, upstream checkpoints, the device). The full stage
configuration is both together, and is what the single-stage commands read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    model_validator,
)

from doll_core.configuration import (
    KEY_WHEN_CHANGED,
    NEVER_IN_KEY,
    Settings,
    context_registry,
    plugin_problems,
    raise_problems,
)
from doll_core.devices import device_field
from doll_core.errors import DollError
from doll_core.interfaces import optional_factory_member
from doll_core.registry import get_registry
from doll_core.relocation import config_record


class _Frozen(Settings):
    """Settings frozen, with unknown keys refused (:class:`Settings`)."""


class AugmentConfig(_Frozen):
    """Augmentation suited to radiographs: a small affine and brightness/contrast. No
    horizontal flip by default, since anatomy is lateralised (the heart is on the left)."""

    enabled: bool = Field(True, description="augment training images")
    rotate_degrees: float = Field(7.0, ge=0, le=45, description="largest rotation, in degrees")
    translate: float = Field(0.05, ge=0, le=0.5, description="fraction of the image side")
    scale: tuple[float, float] = Field((0.92, 1.08), description="range of the zoom factor")
    brightness: float = Field(
        0.08,
        ge=0,
        le=1,
        description="largest brightness change, as a fraction",
    )
    contrast: float = Field(0.15, ge=0, le=1, description="largest contrast change, as a fraction")
    hflip: bool = Field(False, description="flip left-right (off: anatomy is lateralised)")


class StageInputs(_Frozen):
    """What the runner supplies to every stage, whatever the stage."""

    device: Annotated[str, AfterValidator(device_field)] = Field(
        "auto",
        description="cpu, cuda, cuda:N, mps or auto (the first accelerator); never changes "
        "a result beyond rounding",
        json_schema_extra=NEVER_IN_KEY,
    )
    image_cache: Path | None = Field(
        None,
        json_schema_extra=NEVER_IN_KEY,
        description="a folder of decoded, resized images (doll_core.data.decoded), read "
        "instead of the files after their first decoding; never changes a result",
    )

    @classmethod
    def runner_keys(cls) -> frozenset[str]:
        """The keys of these inputs: an experiment file never sets them in a stage's
        section (the runner fills them in from other sections)."""
        return frozenset(cls.model_fields)


class LoopSettings(_Frozen):
    """The settings every training stage shares (see :mod:`doll_core.training.loop`)."""

    epochs: int = Field(10, ge=1, description="passes over the training images")
    batch_size: int = Field(32, ge=1, description="images per optimiser step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    warmup_epochs: float = Field(
        1.0,
        ge=0,
        description="linear warm-up before the cosine decay, in epochs",
    )
    min_lr_ratio: float = Field(
        0.01,
        ge=0,
        le=1,
        description="the cosine decay's floor, as a fraction of lr",
    )
    early_stopping_patience: int | None = Field(
        5,
        ge=1,
        description="epochs without improvement before stopping; None = never",
    )
    min_delta: float = Field(0.0, ge=0, description="the least gain that counts as an improvement")
    augment: AugmentConfig = Field(AugmentConfig(), description="augmentation of training images")
    num_workers: int = Field(
        2,
        ge=0,
        description="DataLoader processes reading images (0 = in the main process)",
        json_schema_extra=NEVER_IN_KEY,
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description=(
            "mixed precision: auto (bf16 or fp16 where the device has it), off, bf16, fp16"
        ),
    )
    channels_last: bool = Field(
        True,
        description="channels-last memory format (pays on GPUs with tensor cores)",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model (opt-in; compile time reported, eager fallback)",
        json_schema_extra=NEVER_IN_KEY,
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="for quick checks")
    on_error: Literal["skip", "fail"] = Field(
        "skip",
        description="an unreadable image: skip it (counted and named) or fail",
    )
    state_every: int = Field(
        1,
        ge=1,
        description="epochs between resume states (state.pt, with the optimiser's moments); "
        "the last epoch always writes one, and a run resumes from the latest",
        json_schema_extra=NEVER_IN_KEY,
    )

    def to_record(self, holder: Path) -> dict[str, Any]:
        """JSON-ready, for a checkpoint's metadata, a training state or a ``config.json``
        in the folder ``holder``: paths as :func:`~doll_core.relocation.recorded_path`
        names them (relative inside a run folder that moves as one, else absolute)."""
        return config_record(self, holder)


class Seeded(_Frozen):
    """The seed of a training run's initial weights, data order and augmentation: a
    setting of most stages, an input of a fine-tuning grid's runs."""

    seed: int = Field(0, description="seed of the initial weights, data order and augmentation")


class ImageSettings(_Frozen):
    """The images a model takes: side, channels and the normalisation of [0, 1] pixels.
    One value of ``mean``/``std`` serves every channel."""

    image_size: int = Field(
        128,
        ge=16,
        le=2048,
        description="side of the square images the model takes, in pixels",
    )
    in_channels: Literal[1, 3] = Field(1, description="1 (grey) or 3 (the grey image repeated)")
    mean: tuple[float, ...] = Field(
        (0.5,),
        description="normalisation mean of [0, 1] pixels (one value serves every channel)",
    )
    std: tuple[float, ...] = Field(
        (0.25,),
        description="normalisation standard deviation of [0, 1] pixels",
    )

    @model_validator(mode="after")
    def _normalisation_fits_channels(self) -> ImageSettings:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) == 1 and self.in_channels == 3:
                object.__setattr__(self, name, values * 3)
            elif len(values) != self.in_channels:
                raise ValueError(f"{name} needs {self.in_channels} value(s), got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class ClassificationSource(_Frozen):
    """The reader of a classification set and its options."""

    dataset: str = Field("chexpert", description="the dataset reader plugin")
    dataset_options: dict[str, Any] = Field(
        default_factory=dict, description="reader options, e.g. uncertainty, frontal_only"
    )


class ClassifierSettings(LoopSettings, ImageSettings, Seeded):
    """A classifier's settings: ``[training]`` merged with its ``[classifiers.NAME]``."""

    backbone: str = Field("tiny_cnn", description="the backbone plugin")
    backbone_params: dict[str, Any] = Field(
        default_factory=dict,
        description="the backbone plugin's parameters",
    )
    train: bool = Field(
        True,
        description="false: use the backbone's weights as they are (a torchxrayvision "
        "model), validated once for its AUROC per observation, never trained",
        json_schema_extra=KEY_WHEN_CHANGED,
    )

    @model_validator(mode="after")
    def _known_backbone(self, info: ValidationInfo) -> ClassifierSettings:
        registry = context_registry(info)
        name, params = self.backbone, self.backbone_params
        problems = plugin_problems(
            registry, "backbone", name, "backbone", params, "backbone_params"
        )
        if not problems:  # the input a model takes is checked with or without a context
            try:
                factory = (registry or get_registry()).get("backbone", name).factory
            except DollError:  # an unknown name: reported where a registry is given
                factory = None
            problems = _normalisation_problems(factory, self)
        raise_problems(problems)
        return self


def _normalisation_problems(factory: Any, settings: ClassifierSettings) -> list[tuple[str, str]]:
    """A backbone whose weights expect one normalisation (its ``input_mean`` and
    ``input_std``, e.g. torchxrayvision's) sets ``mean``/``std`` where they are unset, and
    refuses other values."""
    mean = optional_factory_member(factory, "backbone", "input_mean")
    std = optional_factory_member(factory, "backbone", "input_std")
    if mean is None or std is None:
        return []
    want: tuple[tuple[float, ...], tuple[float, ...]] = (tuple(mean), tuple(std))
    if not {"mean", "std"} & settings.model_fields_set:  # unset: the backbone's own
        object.__setattr__(settings, "mean", want[0])
        object.__setattr__(settings, "std", want[1])
        return []
    given = tuple(settings.mean), tuple(settings.std)
    if all(len(g) == len(w) and all(abs(a - b) < 1e-12 for a, b in zip(g, w, strict=True))
           for g, w in zip(given, want, strict=True)):  # fmt: skip
        return []
    return [("mean", f"backbone {settings.backbone!r} takes mean = {list(want[0])} and std = "
             f"{list(want[1])} (the input its weights expect); got mean = {list(given[0])}, "
             f"std = {list(given[1])}")]  # fmt: skip


class ClassifierInputs(ClassificationSource, StageInputs):
    """What the runner supplies to classifier training (from ``[data.classification]``)."""

    data: Path = Field(
        description="dataset root, e.g. the folder holding CheXpert-v1.0-small (a stage "
        "input: its resolved path enters the stage's inputs)",
        json_schema_extra=NEVER_IN_KEY,
    )
    train_split: str = Field("train", description="the reader's split the classifier learns from")
    val_split: str = Field("valid", description="the reader's split that picks the best epoch")


class ClassifierTrainingConfig(ClassifierSettings, ClassifierInputs):
    """Everything that determines a classifier-training run."""
