"""The label-generation configuration."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from doll_core.attribution.api import (
    DEFAULT_EXPLAINER,
    split_engine_options,
    takes_engine,
    with_engine_options,
)
from doll_core.attribution.engine import EngineOptions
from doll_core.attribution.postprocess import PostprocessConfig
from doll_core.configuration import (
    KEY_WHEN_CHANGED,
    NEVER_IN_KEY,
    Settings,
    context_registry,
    in_key,
    settings_key,
)
from doll_core.digests import sha256_remembered
from doll_core.observations import OBSERVATIONS
from doll_core.training.config import ClassificationSource, StageInputs

#: the version of the maps a given config produces (see ``content_hash``)
LABELS_VERSION = 2


class LabelSettings(Settings):
    """The label-generation settings a user writes (``[explanation]`` of an experiment)."""

    split: str = Field("train", description="the classification split whose images are explained")
    explainer: str = Field(DEFAULT_EXPLAINER, description="the explainer plugin")
    explainer_params: dict[str, Any] = Field(
        default_factory=dict, description="the explainer's parameters (its maps' meaning)"
    )
    engine: EngineOptions = Field(
        default_factory=EngineOptions,
        description="execution options ([explanation.engine]); those that move the maps' "
        "values enter keys among the explainer's parameters, as before they had a section",
        json_schema_extra=in_key(merged_into="explainer_params"),
    )
    targets: Literal["positive", "predicted", "all"] = Field(
        "positive",
        description=(
            "observations explained per image: those it has (positive), those the "
            "classifiers predict, or all"
        ),
    )
    threshold: float = Field(0.5, ge=0, le=1, description="probability for targets=predicted")
    postprocess: PostprocessConfig = Field(
        PostprocessConfig(binarize="none"),
        description="from raw maps to soft and binary labels ([explanation.postprocess])",
    )
    shard_size: int = Field(256, ge=1, description="images per shard file of the label store")
    label_size: int | None = Field(
        64, ge=8, le=2048, description="side of the stored maps; None = image"
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="images per explainer call (a label store's content hash leaves it out)",
        json_schema_extra=in_key(only=("explain", "labels")),
    )
    workers: int = Field(
        0,
        ge=0,
        description="DataLoader processes reading images (0 = in the main process)",
        json_schema_extra=NEVER_IN_KEY,
    )
    on_error: Literal["skip", "fail"] = Field(
        "skip",
        description="an unreadable image: skip it (counted and named) or fail",
    )
    limit: int | None = Field(None, ge=1, description="label only the first N images")

    @model_validator(mode="before")
    @classmethod
    def _engine_options_apart(cls, values: Any, info: ValidationInfo) -> Any:
        """Engine options written among ``explainer_params`` (before 0.2) of an explainer
        that takes them move to ``engine`` (the old place winning), with a warning."""
        params = values.get("explainer_params") if isinstance(values, dict) else None
        name = values.get("explainer", DEFAULT_EXPLAINER) if isinstance(values, dict) else None
        if not isinstance(params, dict) or not takes_engine(name, context_registry(info)):
            return values
        new_place = "engine (in an experiment, [explanation.engine])"
        params, moved = split_engine_options(params, "explainer_params", new_place)
        return {**with_engine_options(values, moved), "explainer_params": params}


class FusionChoice(Settings):
    """The fusion of several classifiers' maps (``[fusion]``): all that a fusion stage's
    key holds of the label settings."""

    fusion: str = Field(
        "mean",
        description="the fusion plugin",
        json_schema_extra=in_key(only=("labels", "store")),
    )
    fusion_params: dict[str, Any] = Field(
        default_factory=dict,
        description="the fusion plugin's parameters",
        json_schema_extra=in_key(only=("labels", "store")),
    )


class LabelInputs(FusionChoice, ClassificationSource, StageInputs):
    """What the runner supplies to label generation: the classification set (from
    ``[data.classification]``), the classifier checkpoints and the fusion (``[fusion]``)."""

    data: Path = Field(
        description="the classification set's root (a stage input)",
        json_schema_extra=NEVER_IN_KEY,
    )
    classifiers: tuple[Path, ...] = Field(
        min_length=1,
        description="the classifier checkpoints explained (a stage input: their stages' "
        "keys, or in a store's hash their SHA-256, enter instead)",
        json_schema_extra=NEVER_IN_KEY,
    )
    never_targets: tuple[str, ...] = Field(
        (),
        description="observations never explained, besides those the store's classifiers "
        "have no output for (a run explaining several classifiers apart gives what any of "
        "them lacks, so that their stores hold the same targets and fuse)",
        json_schema_extra=KEY_WHEN_CHANGED,
    )

    @model_validator(mode="after")
    def _known_observations(self) -> LabelInputs:
        unknown = sorted(set(self.never_targets) - set(OBSERVATIONS))
        if unknown:
            raise ValueError(f"never_targets names unknown observations {unknown}")
        return self


class LabelGenerationConfig(LabelSettings, LabelInputs):
    """Everything that determines a label store's content."""

    def content_hash(self) -> str:
        """A hash of everything that changes the labels: the settings that enter a
        ``"store"`` key (:func:`~doll_core.configuration.settings_key`) and the classifier
        files' SHA-256."""
        payload = settings_key(self, "store")
        payload["classifiers"] = [sha256_remembered(p) for p in self.classifiers]
        payload["data"] = None  # the same data may move; its ids are in the shards
        # bumped when post-processing changes labels for the same settings (2: maps scaled
        # by a power of two, sparse maps by their maximum), so that a store begun by an
        # older DoLL is never completed with labels made another way
        payload["labels_version"] = LABELS_VERSION
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
