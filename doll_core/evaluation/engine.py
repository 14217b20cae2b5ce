"""Compute metric plugins over classifiers x explainers on images with ground truth.

Every explainer of a classifier sees the same images, in the same order, with the same
targets (every positive observation with a mask) and the same random draws (each batch's
seed is the evaluation's seed plus the batch's first image index): the explainers are
paired, and a leaderboard's differences are differences of explainers, not of draws.
Each batch is explained once per explainer, ``[B, T, H, W]`` for all targets, and every
metric scores all of its maps at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from doll_core.attribution.api import explain
from doll_core.attribution.engine import EngineOptions
from doll_core.attribution.scoring import (
    finding_batches,
    images_with_findings,
    lesion_masks,
    no_image_left,
)
from doll_core.attribution.truth_images import GroundTruthImages
from doll_core.data.imageio import resize_mask
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError, GroundTruthError
from doll_core.evaluation.settings import EvaluationSettings
from doll_core.groundtruth.truth import GroundTruth
from doll_core.metrics.base import NEEDS, MetricBatch, check_needs, run_metric
from doll_core.observations import OBSERVATIONS
from doll_core.registry import Registry, get_registry

#: ``(first image index, images [B, C, H, W], targets long [B, T], image ids)``
Batch = tuple[int, torch.Tensor, torch.Tensor, list[str]]
#: ``progress(classifier, explainer, images done, images in all)``
Progress = Callable[[str, str, int, int], None]


class EvaluationImages(Protocol):
    """Images with findings, their targets and the ground-truth mask of each target."""

    #: images chosen, and those of the last :meth:`batches` that could not be read
    total: int
    skipped: list[SkippedSample]

    def batches(self, batch_size: int) -> Iterator[Batch]: ...

    def masks(self, ids: list[str], targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """bool ``[B, T, H, W]``: each target's ground truth at the maps' size."""
        ...


class PhantomImages:
    """The first ``count`` images of a phantom split with a finding, and their lesion masks."""

    def __init__(
        self, root: Path, *, split: str, size: int, grayscale: bool, count: int, registry: Registry
    ) -> None:
        self.root = Path(root)
        self.dataset = registry.create(
            "dataset", "chexpert", root=self.root, split=split, size=size, grayscale=grayscale
        )
        self.chosen = images_with_findings(self.dataset, count)
        if not self.chosen:
            raise DollError(f"no images with positive findings in the {split} split of {root}")
        self.total = len(self.chosen)
        self.skipped: list[SkippedSample] = []

    def batches(self, batch_size: int) -> Iterator[Batch]:
        self.skipped = []
        return finding_batches(self.dataset, self.chosen, batch_size, self.skipped)

    def masks(self, ids: list[str], targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return lesion_masks(self.root, ids, targets, size)


class TruthImages:
    """Images of a folder matched to a ground truth (CheXlocalize, NIH boxes, COCO), with
    its masks resized to the model's input size (nearest, as masks are)."""

    def __init__(
        self, folder: Path, truth: GroundTruth, *, size: int, grayscale: bool, count: int
    ) -> None:
        self.images = GroundTruthImages(folder, truth, size=size, grayscale=grayscale, count=count)
        self.truth = truth
        self.total = self.images.total
        self.skipped = self.images.skipped

    def batches(self, batch_size: int) -> Iterator[Batch]:
        return self.images.batches(batch_size)

    def masks(self, ids: list[str], targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        masks = torch.zeros(*targets.shape, *size, dtype=torch.bool)
        for b, image_id in enumerate(ids):
            for j, index in enumerate(targets[b].tolist()):
                if index >= 0:
                    true = torch.from_numpy(
                        self.truth.mask(image_id, OBSERVATIONS[index]).astype(np.float32)
                    )
                    masks[b, j] = resize_mask(true[None], size)[0] > 0.5
        return masks


@dataclass
class MetricValues:
    """One metric's score of every map (float64 ``[M]``, ``nan`` = undefined), its
    per-step scores (``[M]`` each), and the seconds it took."""

    values: np.ndarray
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ExplainerEvaluation:
    """Every metric of one explainer of one classifier, map by map: ``image`` ``[M]`` is
    the index (in evaluation order) of the image each map explains, ``observations`` its
    target."""

    classifier: str
    explainer: str
    #: images explained (``image`` indexes them), and those left out (unreadable):
    #: ``{"id", "path", "reason"}`` each
    images: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    image: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    observations: list[str] = field(default_factory=list)
    metrics: dict[str, MetricValues] = field(default_factory=dict)
    explain_seconds: float = 0.0
    error: str | None = None

    @property
    def maps(self) -> int:
        return int(self.image.shape[0])


def build_metrics(
    names: Sequence[str], params: Mapping[str, Mapping[str, Any]], registry: Registry
) -> dict[str, Any]:
    """The metric plugins ``names``, built with their ``params``, each checked against
    what an evaluation gives (images, model, masks, explain), before any work."""
    if not names:
        raise DollError("no metrics to evaluate: name at least one")
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise DollError(
            f"evaluation parameters for {', '.join(unknown)}, which are not among the "
            f"metrics ({', '.join(names)})"
        )
    if len(set(names)) != len(names):
        raise DollError(f"a metric is named twice: {list(names)}")
    metrics = {
        name: registry.create("metric", name, **dict(params.get(name, {}))) for name in names
    }
    for name, metric in metrics.items():
        check_needs(metric, name, NEEDS)
    return metrics


def _explain_function(
    name: str, params: Mapping[str, Any], registry: Registry, engine: EngineOptions | None
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    def function(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return explain(model, images, targets, name, engine=engine, registry=registry, **params)

    return function


def evaluate_explainer(
    classifier: str,
    model: nn.Module,
    images: EvaluationImages,
    explainer: str,
    explainer_params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    settings: EvaluationSettings,
    *,
    registry: Registry,
    engine: EngineOptions | None = None,
    progress: Progress | None = None,
) -> ExplainerEvaluation:
    """Every metric of ``explainer`` on ``model`` over ``images`` (an explainer that refuses
    the model is recorded with its error, not raised)."""
    outcome = ExplainerEvaluation(classifier, explainer)
    explain_map = _explain_function(explainer, explainer_params, registry, engine)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    index: list[np.ndarray] = []
    values: dict[str, list[np.ndarray]] = {name: [] for name in metrics}
    steps: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in metrics}
    seconds = dict.fromkeys(metrics, 0.0)
    read_masks = any("masks" in metric.needs for metric in metrics.values())
    ordinal: dict[str, int] = {}  # image id -> its index among the images explained
    try:
        for start, batch_images, targets, ids in images.batches(settings.batch_size):
            batch_images, targets = batch_images.to(device), targets.to(device)
            started = time.perf_counter()
            maps = explain_map(model, batch_images, targets)
            outcome.explain_seconds += time.perf_counter() - started
            size = (int(maps.shape[-2]), int(maps.shape[-1]))
            masks = images.masks(ids, targets.cpu(), size).to(device) if read_masks else None
            batch = MetricBatch(
                maps,
                targets,
                images=batch_images,
                model=model,
                masks=masks,
                explain=explain_map,
                seed=settings.seed + start,
                max_rows=settings.max_rows,
            )
            real = targets.cpu() >= 0
            rows = real.nonzero()
            positions = [ordinal.setdefault(image_id, len(ordinal)) for image_id in ids]
            index.append(np.asarray(positions, dtype=np.int64)[rows[:, 0].numpy()])
            outcome.observations += [OBSERVATIONS[int(i)] for i in targets.cpu()[real]]
            for name, metric in metrics.items():
                started = time.perf_counter()
                scores = run_metric(metric, name, batch)
                seconds[name] += time.perf_counter() - started
                values[name].append(scores.values[real].numpy())
                for step, step_values in scores.steps.items():
                    steps[name].setdefault(step, []).append(step_values[real].numpy())
            if progress is not None:
                progress(
                    classifier,
                    explainer,
                    min(start + settings.batch_size, images.total),
                    images.total,
                )
    except GroundTruthError:  # the data's fault, not this explainer's: stop
        raise
    except DollError as exc:
        outcome.error = str(exc)
        return outcome
    outcome.skipped = [dict(vars(s)) for s in images.skipped]
    outcome.images = no_image_left(images.total, images.skipped)
    outcome.image = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    for name in metrics:
        outcome.metrics[name] = MetricValues(
            np.concatenate(values[name]) if values[name] else np.zeros(0),
            {step: np.concatenate(parts) for step, parts in steps[name].items()},
            round(seconds[name], 3),
        )
    return outcome


def load_classifiers(
    checkpoints: Mapping[str, Path],
    images_for: Callable[[Any], EvaluationImages],
    *,
    device: str | torch.device,
    registry: Registry,
) -> tuple[dict[str, nn.Module], dict[str, EvaluationImages]]:
    """``(name -> classifier, name -> its images)`` of each checkpoint; ``images_for(meta)``
    makes a classifier's images from its checkpoint's metadata (input size, channels)."""
    from doll_core.checkpoint import load_classifier

    models: dict[str, nn.Module] = {}
    images: dict[str, EvaluationImages] = {}
    for name, path in checkpoints.items():
        models[name], meta = load_classifier(path, device=device, registry=registry)
        images[name] = images_for(meta)
    return models, images


def evaluate(
    classifiers: Mapping[str, nn.Module],
    images: Mapping[str, EvaluationImages],
    explainers: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Any],
    settings: EvaluationSettings,
    *,
    registry: Registry | None = None,
    engine: EngineOptions | None = None,
    progress: Progress | None = None,
) -> list[ExplainerEvaluation]:
    """Every metric for every classifier x explainer.

    :param classifiers: name -> classifier in eval mode.
    :param images: classifier name -> its images (each classifier reads them at its own
        input size and channels).
    :param explainers: explainer name -> its parameters.
    :param metrics: name -> metric plugin, as :func:`build_metrics` makes them from
        ``settings``.
    """
    registry = registry or get_registry()
    for name in explainers:
        registry.get("explainer", name)  # an unknown explainer fails before any work
    return [
        evaluate_explainer(
            classifier,
            model,
            images[classifier],
            explainer,
            params,
            metrics,
            settings,
            registry=registry,
            engine=engine,
            progress=progress,
        )
        for classifier, model in classifiers.items()
        for explainer, params in explainers.items()
    ]
