"""Score explainers' localisation against ground-truth masks: the phantom's lesion masks,
or any ground truth (:mod:`doll_core.groundtruth`) with the images of a folder.

For each image with findings, every positive observation is explained; each map is
post-processed and compared with the observation's mask by every localisation metric: at
the model's input size for the phantom, at the image's native size for ground truth,
with CheXlocalize's mIoU and hit rate (:mod:`doll_core.groundtruth.scoring`). A
model-randomisation check compares maps of the trained classifier with maps of a copy
whose weights were re-initialised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from doll_core import markdown
from doll_core.attribution.api import explain
from doll_core.attribution.engine import EngineOptions
from doll_core.attribution.postprocess import PostprocessConfig, postprocess
from doll_core.attribution.targets import select_targets
from doll_core.attribution.truth_images import Batch, GroundTruthImages
from doll_core.data.imageio import read_mask, resize_mask
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError, GroundTruthError
from doll_core.groundtruth.scoring import CHEXLOCALIZE_SCORES, ScoreTable
from doll_core.groundtruth.truth import GroundTruth
from doll_core.interfaces import optional_member
from doll_core.markdown import score_title
from doll_core.metrics.localization import (
    LOCALIZATION_METRICS,
    nanmean,
    randomization_similarity,
    randomized_copy,
)
from doll_core.models import Classifier
from doll_core.observations import OBSERVATIONS
from doll_core.phantom.layout import lesion_mask_path
from doll_core.registry import Registry, get_registry


@dataclass
class ExplainerScores:
    """Mean score per metric (nan-skipping), the same per observation (with its number of
    maps), how many maps, seconds per image."""

    explainer: str
    means: dict[str, float] = field(default_factory=dict)
    per_observation: dict[str, dict[str, float]] = field(default_factory=dict)
    maps: int = 0
    #: images explained, and those left out (unreadable): ``{"id", "path", "reason"}`` each
    images: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds_per_image: float = math.nan
    randomization_similarity: float = math.nan
    error: str | None = None


def lesion_masks(
    root: Path, image_ids: Sequence[str], targets: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """bool ``[B, T, H, W]``: the phantom mask of each target (empty when absent)."""
    masks = torch.zeros(*targets.shape, *size, dtype=torch.bool)
    for b, image_id in enumerate(image_ids):
        for j, index in enumerate(targets[b].tolist()):
            if index < 0:
                continue
            path = lesion_mask_path(root, image_id, OBSERVATIONS[index])
            if path.is_file():
                mask = torch.from_numpy(read_mask(path).astype(np.float32))[None]
                masks[b, j] = resize_mask(mask, size)[0] > 0.5
    return masks


def images_with_findings(dataset: Any, count: int) -> list[int]:
    """The indices of the first ``count`` images with a positive observation."""
    label_arrays = optional_member(dataset, "dataset", "label_arrays")
    if label_arrays is None:
        raise DollError(f"dataset {type(dataset).__name__} has no label_arrays(index)")
    chosen: list[int] = []
    for index in range(len(dataset)):
        labels, mask = label_arrays(index)
        targets = select_targets(
            "positive",
            labels=torch.from_numpy(labels)[None],
            label_mask=torch.from_numpy(mask)[None],
        )
        if (targets >= 0).any():
            chosen.append(index)
        if len(chosen) == count:
            break
    return chosen


def no_image_left(total: int, skipped: Sequence[SkippedSample]) -> int:
    """The number of images explained of ``total`` chosen, ``skipped`` left out.

    :raises DollError: when none could be read, naming the first and why.
    """
    explained = total - len(skipped)
    if explained <= 0 and skipped:
        first = skipped[0]
        raise DollError(
            f"none of the {total} images chosen could be read, so nothing was explained "
            f"(first: {first.path}: {first.reason})"
        )
    return explained


def explained_note(images: int, skipped: Sequence[Mapping[str, str]]) -> str:
    """``"N images explained"``, with how many were skipped as unreadable and the first."""
    text = f"{images} image{'s' if images != 1 else ''} explained"
    if skipped:
        text += (
            f", {len(skipped)} skipped as unreadable (first: {skipped[0]['path']}: "
            f"{skipped[0]['reason']})"
        )
    return text


def finding_batches(
    dataset: Any, chosen: Sequence[int], batch_size: int, skipped: list[SkippedSample]
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, list[str]]]:
    """``(start, images [B, C, H, W], positive targets [B, T], ids)`` of each batch of
    ``chosen``; unreadable images are left out and appended to ``skipped`` (a batch of
    only those is not yielded)."""
    for start in range(0, len(chosen), batch_size):
        read = [dataset[i] for i in chosen[start : start + batch_size]]
        skipped.extend(s for s in read if isinstance(s, SkippedSample))
        samples = [s for s in read if not isinstance(s, SkippedSample)]
        if not samples:
            continue
        targets = select_targets(
            "positive",
            labels=torch.stack([s["labels"] for s in samples]),
            label_mask=torch.stack([s["label_mask"] for s in samples]),
        )
        yield start, torch.stack([s["image"] for s in samples]), targets, [s["id"] for s in samples]


@dataclass
class _PhantomImages:
    """The phantom's images with findings and their lesion masks, at the model's size."""

    dataset: Any
    chosen: list[int]
    root: Path
    #: the images of the last :meth:`batches` that could not be read
    skipped: list[SkippedSample] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.chosen)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        self.skipped = []
        return finding_batches(self.dataset, self.chosen, batch_size, self.skipped)

    def score(
        self,
        ids: list[str],
        targets: torch.Tensor,
        soft: torch.Tensor,
        binary: torch.Tensor | None,
        table: ScoreTable,
        threshold: float | None,
    ) -> None:
        """Add every localisation metric of the maps ``soft`` ``[B, T, H, W]`` (IoU and Dice
        on ``binary``) to ``table``; ``threshold`` is not used."""
        size = (int(soft.shape[-2]), int(soft.shape[-1]))
        truth = lesion_masks(self.root, ids, targets, size)
        real = targets >= 0
        chosen_binary = None if binary is None else binary[real]
        values = {m.name: m(soft[real], truth[real], chosen_binary) for m in LOCALIZATION_METRICS}
        for k, index in enumerate(targets[real].tolist()):
            table.add(OBSERVATIONS[index], {name: float(v[k]) for name, v in values.items()})


_Images = _PhantomImages | GroundTruthImages


@dataclass
class _Scoring:
    """What scoring every explainer shares: the models, the images, the truth."""

    model: Classifier
    random_model: nn.Module
    images: _Images
    post: PostprocessConfig
    registry: Registry
    batch_size: int
    randomization_images: int
    progress: Callable[[str, int, int], None] | None
    engine: EngineOptions | None
    threshold: float | None = None

    def explainer(self, name: str, params: dict[str, Any]) -> ExplainerScores:
        """One explainer's scores (or the error that stopped it)."""
        table = ScoreTable()
        outcome = ExplainerScores(name)
        similarity: list[float] = []
        seconds, maps_done = 0.0, 0
        # ranking and mass metrics read the unclipped map: percentile clipping would tie
        # the top pixels and flatter the pointing game
        unclipped = self.post.model_copy(
            update={"clip_percentile": None, "gamma": None, "binarize": "none"}
        )
        total = self.images.total
        try:
            for start, images, targets, ids in self.images.batches(self.batch_size):
                started = time.perf_counter()
                options = {"engine": self.engine, "registry": self.registry, **params}
                maps = explain(self.model, images, targets, name, **options)
                seconds += time.perf_counter() - started
                binary = postprocess(maps, self.post, targets=targets).binary
                ranked = postprocess(maps, unclipped, targets=targets).soft
                self.images.score(ids, targets, ranked, binary, table, self.threshold)
                real = targets >= 0
                maps_done += int(real.sum())
                if start < self.randomization_images:
                    random_maps = explain(self.random_model, images, targets, name, **options)
                    similarity.append(randomization_similarity(maps[real], random_maps[real]))
                if self.progress is not None:
                    self.progress(name, min(start + self.batch_size, total), total)
        except GroundTruthError:  # the data's fault, not this explainer's: stop
            raise
        except DollError as exc:
            outcome.error = str(exc)
            return outcome
        outcome.skipped = [dict(vars(s)) for s in self.images.skipped]
        outcome.images = no_image_left(total, self.images.skipped)
        outcome.means = table.means()
        outcome.per_observation = table.per_observation()
        outcome.maps = maps_done
        outcome.seconds_per_image = seconds / outcome.images
        outcome.randomization_similarity = nanmean(torch.tensor(similarity, dtype=torch.float64))
        return outcome


def score_explainers(
    model: Classifier,
    data_root: str | Path,
    explainers: Sequence[str],
    *,
    image_size: int,
    in_channels: int = 1,
    split: str = "valid",
    count: int = 200,
    batch_size: int = 8,
    explainer_params: dict[str, dict[str, Any]] | None = None,
    post: PostprocessConfig | None = None,
    randomization_images: int = 16,
    registry: Registry | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    engine: EngineOptions | None = None,
    ground_truth: GroundTruth | None = None,
    threshold: float | None = None,
) -> list[ExplainerScores]:
    """Localisation scores of each explainer on the first ``count`` images of ``split``
    that have at least one positive observation with a mask; ``engine``: the execution
    options every explainer that takes them runs with.

    With ``ground_truth``, ``data_root`` is a folder of images matched to its image ids
    (``split`` is not used) and the maps are scored against it at the native size
    (:mod:`doll_core.attribution.truth_images`), with CheXlocalize's mIoU (Otsu's
    segmentation, or ``threshold``) and hit rate.
    """
    registry = registry or get_registry()
    root = Path(data_root)
    images: _Images
    if ground_truth is not None:
        images = GroundTruthImages(
            root, ground_truth, size=image_size, grayscale=in_channels == 1, count=count
        )
    else:
        dataset = registry.create(
            "dataset",
            "chexpert",
            root=root,
            split=split,
            size=image_size,
            grayscale=in_channels == 1,
        )
        chosen = images_with_findings(dataset, count)
        if not chosen:
            raise DollError(f"no images with positive findings in the {split} split of {root}")
        images = _PhantomImages(dataset, chosen, root)
    scoring = _Scoring(
        model,
        randomized_copy(model),
        images,
        post or PostprocessConfig(),
        registry,
        batch_size,
        randomization_images,
        progress,
        engine,
        threshold,
    )
    params = explainer_params or {}
    return [scoring.explainer(name, params.get(name, {})) for name in explainers]


def _score_columns(results: Sequence[ExplainerScores]) -> list[tuple[str, bool]]:
    """``(name, higher is better)`` of the scores the results hold: CheXlocalize's (with
    ground truth) before the project's metrics."""
    held = {name for r in results for name in r.means}
    columns = [(name, True) for name in CHEXLOCALIZE_SCORES if name in held]
    return columns + [(m.name, m.higher_is_better) for m in LOCALIZATION_METRICS]


def _titles(columns: Sequence[tuple[str, bool]]) -> list[str]:
    """Column titles of ``(name, higher is better)`` score columns: ``name ↑`` or ``name ↓``."""
    return [score_title(name, higher) for name, higher in columns]


def _cells(means: Mapping[str, float], columns: Sequence[tuple[str, bool]]) -> list[str]:
    """The ``means`` of ``columns``, to 3 places (``nan`` where a score is missing)."""
    return [f"{means.get(name, math.nan):.3f}" for name, _ in columns]


def per_observation_table(results: Sequence[ExplainerScores]) -> str:
    """A Markdown table of each explainer's mean scores per observation."""
    columns = _score_columns(results)
    rows = [
        [result.explainer, observation, str(int(means["maps"])), *_cells(means, columns)]
        for result in results
        for observation, means in result.per_observation.items()
    ]
    return markdown.table(["explainer", "observation", "maps", *_titles(columns)], rows)


def scores_table(results: Sequence[ExplainerScores]) -> str:
    """A Markdown table of :func:`score_explainers` results (arrows give score direction)."""
    columns = _score_columns(results)
    header = ["explainer", *_titles(columns), "randomisation similarity ↓", "maps", "s / image"]
    rows = []
    for result in results:
        if result.error:
            refused = f"refused: {result.error.split(':')[0]}"
            rows.append([result.explainer, *["—"] * (len(header) - 2), refused])
            continue
        cells = _cells(result.means, columns)
        cells += [
            f"{result.randomization_similarity:.3f}",
            str(result.maps),
            f"{result.seconds_per_image:.3f}",
        ]
        rows.append([result.explainer, *cells])
    return markdown.table(header, rows)
