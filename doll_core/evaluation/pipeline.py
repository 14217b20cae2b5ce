"""One evaluation pipeline for ``doll run``'s ``[evaluation]`` stage and ``doll evaluate``:
classifiers loaded, metrics and explainers built (a wrong parameter stops here, before any
work), every classifier x explainer scored, and the leaderboard written."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from doll_core.attribution.api import create_explainer
from doll_core.attribution.engine import EngineOptions
from doll_core.attribution.scoring import explained_note
from doll_core.evaluation.engine import (
    EvaluationImages,
    ExplainerEvaluation,
    PhantomImages,
    Progress,
    TruthImages,
    build_metrics,
    evaluate,
    load_classifiers,
)
from doll_core.evaluation.leaderboard import build_leaderboard, write_leaderboard
from doll_core.evaluation.settings import EvaluationSettings
from doll_core.groundtruth.truth import GroundTruth
from doll_core.registry import Registry


def images_source(
    root: Path,
    settings: EvaluationSettings,
    registry: Registry,
    truth: GroundTruth | None = None,
) -> Callable[[Any], EvaluationImages]:
    """``images_for(classifier metadata)``: the images with findings under ``root`` at the
    classifier's input size and channels, with the phantom's lesion masks, or, given
    ``truth``, the images of a folder matched to that ground truth."""

    def images_for(meta: Any) -> EvaluationImages:
        grey = meta.in_channels == 1
        if truth is not None:
            return TruthImages(
                root, truth, size=meta.image_size, grayscale=grey, count=settings.count
            )
        return PhantomImages(
            root,
            split=settings.split,
            size=meta.image_size,
            grayscale=grey,
            count=settings.count,
            registry=registry,
        )

    return images_for


@dataclass
class EvaluationOutcome:
    """What :func:`run_evaluation` computed and wrote."""

    board: dict[str, Any]
    evaluations: list[ExplainerEvaluation]
    written: list[Path] = field(default_factory=list)

    @property
    def first_run(self) -> ExplainerEvaluation:
        """The first evaluation that ran (every one reads the same images), else the
        first."""
        return next((e for e in self.evaluations if e.error is None), self.evaluations[0])

    @property
    def explained(self) -> str:
        """``"N images explained[, K skipped ...]"`` of :attr:`first_run`."""
        return explained_note(self.first_run.images, self.first_run.skipped)


def run_evaluation(
    checkpoints: Mapping[str, Path],
    images_for: Callable[[Any], EvaluationImages],
    explainers: Mapping[str, Mapping[str, Any]],
    settings: EvaluationSettings,
    out: Path,
    *,
    registry: Registry,
    device: str | torch.device = "cpu",
    engine: EngineOptions | None = None,
    progress: Progress | None = None,
    header: Callable[[EvaluationOutcome], str] = lambda outcome: "# Explainer evaluation",
    extra: Mapping[str, Any] | None = None,
    writing: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> EvaluationOutcome:
    """Score every classifier of ``checkpoints`` (name -> ``best.pt``) x explainer of
    ``explainers`` (name -> parameters) with ``settings``' metrics on ``images_for``'s
    images, and write the leaderboard to the folder ``out``.

    Args:
        header (Callable): the leaderboard's Markdown header, from the outcome. Default:
            ``"# Explainer evaluation"``.
        extra (Mapping | None): more entries of the written board (the command's inputs).
            Default: none.
        writing (Callable): the context the leaderboard is written in (a run's lock).
            Default: none.

    :raises DollError: for a metric or explainer parameter a plugin cannot take (before
        any work), a checkpoint that does not load, or no readable image.
    """
    metrics = build_metrics(settings.metrics, settings.params, registry)
    for name, values in explainers.items():
        create_explainer(name, values, engine, registry=registry)
    models, images = load_classifiers(checkpoints, images_for, device=device, registry=registry)
    evaluations = evaluate(
        models,
        images,
        explainers,
        metrics,
        settings,
        registry=registry,
        engine=engine,
        progress=progress,
    )
    board = build_leaderboard(
        evaluations, metrics, replicates=settings.bootstrap, seed=settings.seed
    )
    outcome = EvaluationOutcome(board, evaluations)
    board.update(extra or {})
    board["skipped"] = outcome.first_run.skipped
    with writing():
        outcome.written = write_leaderboard(out, board, header(outcome))
    return outcome
