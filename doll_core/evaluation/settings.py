"""What an evaluation computes: the ``[evaluation]`` table of an experiment, and the
options of ``doll evaluate``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from doll_core.configuration import Settings

#: The metrics ``doll evaluate`` computes when none are named: one or more of each
#: category, at settings that fit a CPU.
DEFAULT_METRICS = (
    "deletion",
    "insertion",
    "abpc",
    "road",
    "faithfulness_correlation",
    "cascading_randomisation",
    "random_logit",
    "sparseness",
    "entropy",
    "pointing_game",
    "hit_rate",
    "relevance_rank_accuracy",
    "relevance_mass_accuracy",
    "pixel_auroc",
)


class EvaluationSettings(Settings):
    """Which metrics, on how many images, with which draws."""

    metrics: list[str] = Field(
        default_factory=list, description="metric plugins; empty = no evaluation in a run"
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="parameters per metric: {metric: {key: value}}"
    )
    count: int = Field(64, ge=1, description="images with findings to evaluate on")
    split: str = Field("valid", description="phantom split the images come from")
    batch_size: int = Field(8, ge=1, description="images per explain call")
    seed: int = Field(0, description="seed of every metric's random draws")
    max_rows: int = Field(256, ge=1, description="images per forward pass inside a metric")
    bootstrap: int = Field(1000, ge=0, description="bootstrap replicates of each CI (0: none)")
