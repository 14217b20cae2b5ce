"""Images of a folder matched to ground truth, for scoring explainers against it.

The images are the files under a folder whose paths match the ground truth's image ids
(:func:`~doll_core.groundtruth.matching.find_images`); each is read as the classifier
reads its data (grey or RGB, resized to its input size: bilinear, anti-aliased) and
explained for the observations the ground truth annotates for it (found without drawing
a mask; never No Finding, nor a finding without a CheXpert observation). A mask that
still comes out empty has undefined scores, which the means skip. Its maps are scored at
the image's native size (:mod:`doll_core.groundtruth.scoring`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from doll_core.data.imageio import read_image_and_facts, resize_image, resize_mask
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError, GroundTruthError
from doll_core.groundtruth.matching import find_images
from doll_core.groundtruth.scoring import ScoreTable, score_map
from doll_core.groundtruth.truth import GroundTruth
from doll_core.metrics.chexlocalize import resize_map, segment_heatmap
from doll_core.observations import OBSERVATIONS

#: ``(start, images [B, C, S, S], targets long [B, T] (-1 padded), ground-truth ids)``.
Batch = tuple[int, torch.Tensor, torch.Tensor, list[str]]
NOT_EXPLAINED = ("No Finding",)


#: How far an image's aspect ratio may stray from its ground truth's (rounding of a
#: downscaled copy, as CheXpert-small is of CheXpert) before it is not the same picture.
ASPECT_TOLERANCE = 0.02


def check_orientation(
    path: Path, native: tuple[int, int], truth: tuple[int, int] | None, source: str
) -> None:
    """Refuse an image whose shape is not its ground truth's: a downscaled copy (same
    aspect ratio) fits, a rotated or cropped one does not (a square image rotated cannot
    be told apart).

    :raises GroundTruthError: naming the file, both sizes and the ground truth.
    """
    if truth is None:
        return
    image_aspect, truth_aspect = native[1] / native[0], truth[1] / truth[0]
    if abs(image_aspect / truth_aspect - 1) > ASPECT_TOLERANCE:
        raise GroundTruthError(
            f"{path} is {native[1]} x {native[0]} (W x H), while {source} annotates it at "
            f"{truth[1]} x {truth[0]}: the image is rotated, cropped or another picture, so "
            "its maps cannot be scored against that ground truth"
        )


class GroundTruthImages:
    """The first ``count`` images (by ground-truth id) under ``folder`` with an annotated
    observation in ``truth`` (module docstring)."""

    def __init__(
        self, folder: Path, truth: GroundTruth, *, size: int, grayscale: bool, count: int
    ) -> None:
        self.truth, self.size, self.grayscale = truth, (size, size), grayscale
        #: none: an unreadable image stops the run (:meth:`batches`)
        self.skipped: list[SkippedSample] = []
        files = find_images(folder, truth)
        self.items: list[tuple[str, Path, list[int]]] = []
        for image_id in sorted(files):
            targets = [
                OBSERVATIONS.index(name)
                for name in truth.annotated(image_id)
                if name in OBSERVATIONS and name not in NOT_EXPLAINED
            ]
            if targets:
                self.items.append((image_id, files[image_id], targets))
            if len(self.items) == count:
                break
        if not self.items:
            raise DollError(
                f"no image under {folder} matches an image with a finding in {truth.source} "
                f"({len(files)} matched an image id)"
            )

    @property
    def total(self) -> int:
        return len(self.items)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The images in batches, with their targets (an unreadable image stops the run
        with its path and why)."""
        for start in range(0, len(self.items), batch_size):
            chunk = self.items[start : start + batch_size]
            images = [self._read(image_id, path) for image_id, path, _ in chunk]
            width = max(len(t) for _, _, t in chunk)
            targets = torch.full((len(chunk), width), -1, dtype=torch.long)
            for row, (_, _, indices) in enumerate(chunk):
                targets[row, : len(indices)] = torch.tensor(indices)
            yield start, torch.stack(images), targets, [image_id for image_id, _, _ in chunk]

    def _read(self, image_id: str, path: Path) -> torch.Tensor:
        """``[C, S, S]``: the image at the model's size, checked to fit its ground truth."""
        array, facts = read_image_and_facts(path, grayscale=self.grayscale, at_least=self.size)
        check_orientation(path, facts.size, self.truth.size(image_id), self.truth.source)
        return resize_image(torch.from_numpy(array), self.size)

    def score(
        self,
        ids: list[str],
        targets: torch.Tensor,
        soft: torch.Tensor,
        binary: torch.Tensor | None,
        table: ScoreTable,
        threshold: float | None,
    ) -> None:
        """Add the scores of maps ``soft`` ``[B, T, S, S]`` (and DoLL's ``binary`` ones; when
        ``None``, CheXlocalize's segmentation stands for them) to ``table``, each at its
        image's native size; ``threshold``: CheXlocalize's (``None``: Otsu's)."""
        for b, image_id in enumerate(ids):
            for j, index in enumerate(targets[b].tolist()):
                if index < 0:
                    continue
                observation = OBSERVATIONS[index]
                true = self.truth.mask(image_id, observation)
                size = (int(true.shape[0]), int(true.shape[1]))
                resized = resize_map(soft[b, j], size)
                segmentation = segment_heatmap(resized, size, threshold)
                chosen = segmentation
                if binary is not None:
                    chosen = resize_mask(binary[b, j][None], size)[0].numpy().astype(np.bool_)
                table.add(observation, score_map(resized, true, chosen, segmentation))
