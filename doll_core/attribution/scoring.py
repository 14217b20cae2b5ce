"""Score explainers' localisation against ground-truth masks (the phantom's lesion masks).

For each image with findings, every positive observation is explained; each map is
post-processed and compared with the observation's mask by every localisation metric.
A model-randomisation check compares maps of the trained classifier with maps of a copy
whose weights were re-initialised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from doll_core.attribution.api import explain
from doll_core.attribution.postprocess import PostprocessConfig, postprocess
from doll_core.attribution.targets import select_targets
from doll_core.data.imageio import read_mask, resize_mask
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError
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
    """Mean score per metric (nan-skipping), how many maps, seconds per image."""

    explainer: str
    means: dict[str, float] = field(default_factory=dict)
    maps: int = 0
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
) -> list[ExplainerScores]:
    """Localisation scores of each explainer on the first ``count`` images of ``split``
    that have at least one positive observation with a mask."""
    registry = registry or get_registry()
    root = Path(data_root)
    dataset = registry.create(
        "dataset", "chexpert", root=root, split=split, size=image_size, grayscale=in_channels == 1
    )
    chosen: list[int] = []
    for index in range(len(dataset)):
        labels, mask = dataset.label_arrays(index)
        targets = select_targets(
            "positive",
            labels=torch.from_numpy(labels)[None],
            label_mask=torch.from_numpy(mask)[None],
        )
        if (targets >= 0).any():
            chosen.append(index)
        if len(chosen) == count:
            break
    if not chosen:
        raise DollError(f"no images with positive findings in the {split} split of {root}")
    post = post or PostprocessConfig()
    unclipped = post.model_copy(update={"clip_percentile": None, "gamma": None, "binarize": "none"})
    params = explainer_params or {}
    random_model = randomized_copy(model)
    results = []
    for name in explainers:
        scores: dict[str, list[torch.Tensor]] = {m.name: [] for m in LOCALIZATION_METRICS}
        outcome = ExplainerScores(name)
        similarity: list[float] = []
        seconds, maps_done = 0.0, 0
        try:
            for start in range(0, len(chosen), batch_size):
                samples = [dataset[i] for i in chosen[start : start + batch_size]]
                samples = [s for s in samples if not isinstance(s, SkippedSample)]
                images = torch.stack([s["image"] for s in samples])
                targets = select_targets(
                    "positive",
                    labels=torch.stack([s["labels"] for s in samples]),
                    label_mask=torch.stack([s["label_mask"] for s in samples]),
                )
                started = time.perf_counter()
                maps = explain(
                    model, images, targets, name, registry=registry, **params.get(name, {})
                )
                seconds += time.perf_counter() - started
                size = (int(images.shape[-2]), int(images.shape[-1]))
                truth = lesion_masks(root, [s["id"] for s in samples], targets, size)
                binary = postprocess(maps, post, targets=targets).binary
                # ranking and mass metrics read the unclipped map: percentile clipping
                # would tie the top pixels and flatter the pointing game
                ranked = postprocess(maps, unclipped, targets=targets).soft
                real = targets >= 0
                for metric in LOCALIZATION_METRICS:
                    scores[metric.name].append(
                        metric(ranked[real], truth[real], None if binary is None else binary[real])
                    )
                maps_done += int(real.sum())
                if start < randomization_images:
                    random_maps = explain(
                        random_model,
                        images,
                        targets,
                        name,
                        registry=registry,
                        **params.get(name, {}),
                    )
                    similarity.append(randomization_similarity(maps[real], random_maps[real]))
                if progress is not None:
                    progress(name, min(start + batch_size, len(chosen)), len(chosen))
        except DollError as exc:
            outcome.error = str(exc)
            results.append(outcome)
            continue
        outcome.means = {k: nanmean(torch.cat(v)) for k, v in scores.items()}
        outcome.maps = maps_done
        outcome.seconds_per_image = seconds / len(chosen)
        outcome.randomization_similarity = nanmean(torch.tensor(similarity, dtype=torch.float64))
        results.append(outcome)
    return results


def scores_table(results: Sequence[ExplainerScores]) -> str:
    """A Markdown table of :func:`score_explainers` results (arrows give score direction)."""
    metrics = [m for m in LOCALIZATION_METRICS]
    header = [
        "explainer",
        *(f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in metrics),
        "randomisation similarity ↓",
        "maps",
        "s / image",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        if result.error:
            lines.append(
                f"| {result.explainer} | "
                + " | ".join(["—"] * (len(header) - 2))
                + f" | refused: {result.error.split(':')[0]} |"
            )
            continue
        cells = [f"{result.means[m.name]:.3f}" for m in metrics]
        cells += [
            f"{result.randomization_similarity:.3f}",
            str(result.maps),
            f"{result.seconds_per_image:.3f}",
        ]
        lines.append(f"| {result.explainer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
