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
from doll_core.attribution.engine import HASHED_OPTIONS, EngineOptions
from doll_core.attribution.postprocess import PostprocessConfig
from doll_core.configuration import Settings, context_registry
from doll_core.digests import sha256_of
from doll_core.observations import OBSERVATIONS
from doll_core.training.config import ClassificationSource, StageInputs

#: the version of the maps a given config produces (see ``content_hash``)
LABELS_VERSION = 2


class LabelSettings(Settings):
    """The label-generation settings a user writes (``[explanation]`` of an experiment)."""

    split: str = "train"
    explainer: str = DEFAULT_EXPLAINER
    explainer_params: dict[str, Any] = Field(
        default_factory=dict, description="the explainer's parameters (its maps' meaning)"
    )
    engine: EngineOptions = Field(
        default_factory=EngineOptions, description="execution options ([explanation.engine])"
    )
    targets: Literal["positive", "predicted", "all"] = "positive"
    threshold: float = Field(0.5, ge=0, le=1, description="probability for targets=predicted")
    postprocess: PostprocessConfig = PostprocessConfig(binarize="none")
    shard_size: int = Field(256, ge=1)
    label_size: int | None = Field(
        64, ge=8, le=2048, description="side of the stored maps; None = image"
    )
    batch_size: int = Field(16, ge=1)
    workers: int = Field(
        0, ge=0, description="DataLoader processes reading images (0 = in the main process)"
    )
    on_error: Literal["skip", "fail"] = "skip"
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


class LabelInputs(ClassificationSource, StageInputs):
    """What the runner supplies to label generation: the classification set (from
    ``[data.classification]``), the classifier checkpoints and the fusion (``[fusion]``)."""

    data: Path
    classifiers: tuple[Path, ...] = Field(min_length=1)
    fusion: str = "mean"
    fusion_params: dict[str, Any] = Field(default_factory=dict)
    never_targets: tuple[str, ...] = Field(
        (),
        description="observations never explained, besides those the store's classifiers "
        "have no output for (a run explaining several classifiers apart gives what any of "
        "them lacks, so that their stores hold the same targets and fuse)",
    )

    @model_validator(mode="after")
    def _known_observations(self) -> LabelInputs:
        unknown = sorted(set(self.never_targets) - set(OBSERVATIONS))
        if unknown:
            raise ValueError(f"never_targets names unknown observations {unknown}")
        return self


class LabelGenerationConfig(LabelSettings, LabelInputs):
    """Everything that determines a label store's content."""

    def result_settings(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """The settings as JSON without device and workers, and of the engine options only
        those that move the maps' values (:data:`~doll_core.attribution.engine.HASHED_OPTIONS`,
        where not at their default), listed with the explainer parameters as they were
        before the engine options had a section of their own, so that stage keys and store
        hashes stay those of earlier DoLL versions; ``exclude`` drops more fields."""
        exclude = {"device", "workers", "engine", "image_cache", *(exclude or set())}
        if not getattr(self, "never_targets", ()):  # stage keys of earlier DoLL stay
            exclude.add("never_targets")
        payload = self.model_dump(mode="json", exclude=exclude)
        if "explainer_params" in payload:
            changed = self.engine.changed()
            hashed = {key: changed[key] for key in HASHED_OPTIONS if key in changed}
            payload["explainer_params"] = {**payload["explainer_params"], **hashed}
        return payload

    def content_hash(self) -> str:
        """A hash of everything that changes the labels (:meth:`result_settings`, without
        the batch size either)."""
        payload = self.result_settings(exclude={"batch_size"})
        payload["classifiers"] = [sha256_of(p) for p in self.classifiers]
        payload["data"] = None  # the same data may move; its ids are in the shards
        # bumped when post-processing changes labels for the same settings (2: maps scaled
        # by a power of two, sparse maps by their maximum), so that a store begun by an
        # older DoLL is never completed with labels made another way
        payload["labels_version"] = LABELS_VERSION
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
