"""Reading a label store for pre-training: images with their DoLL labels and loss weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional
from torch.utils.data import Dataset

from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError
from doll_core.interfaces import optional_member
from doll_core.labels.store import LabelStore
from doll_core.observations import NUM_OBSERVATIONS
from doll_core.registry import Registry, get_registry


class LabeledImages(Dataset[Any]):
    """Images of a label store's dataset with their labels.

    ``ds[i]`` is a dict: ``image`` float32 ``[C, H, W]``, ``target`` float32
    ``[14, H, W]`` (the soft label in [0, 1], or 0/1 when ``threshold`` is set; zero for
    observations that were not explained), ``weight`` float32 ``[14, H, W]`` (1 on
    foreground, ``background_weight`` elsewhere, as PSSL down-weights background), ``id``.
    Threshold and weights are chosen at read time, so ablating them needs no regeneration.
    """

    def __init__(
        self,
        store: str | Path,
        *,
        data: str | Path | None = None,
        size: int | Sequence[int] | None = None,
        threshold: float | None = None,
        background_weight: float = 0.1,
        registry: Registry | None = None,
    ) -> None:
        """:param data: the dataset root (default: the one the store was made from).
        :param size: output size (default: the classifiers' image size)."""
        self.store = LabelStore(store)
        config = self.store.config["config"]
        if threshold is not None and not 0 <= threshold <= 1:
            raise DollError(f"threshold must be in [0, 1], got {threshold}")
        if not 0 <= background_weight <= 1:
            raise DollError(f"background_weight must be in [0, 1], got {background_weight}")
        self.threshold, self.background_weight = threshold, background_weight
        self.dataset = (registry or get_registry()).create(
            "dataset",
            config["dataset"],
            root=data or self.store.data_root,
            split=config["split"],
            size=size or self.store.config["label_size"],
            on_error=config["on_error"],
            **config["dataset_options"],
        )
        sample_id = optional_member(self.dataset, "dataset", "sample_id")
        if sample_id is None:
            raise DollError(
                f"dataset {config['dataset']!r} has no sample_id(index): the labels of a "
                "store are matched to its images by id"
            )
        position = {sample_id(i): i for i in range(len(self.dataset))}
        missing = [image_id for image_id in self.store.ids if image_id not in position]
        if missing:
            raise DollError(
                f"{len(missing)} labelled images are not in the dataset "
                f"(first: {missing[0]!r}); is data= the right folder?"
            )
        self.ids = self.store.ids
        self._positions = [position[image_id] for image_id in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        sample = self.dataset[self._positions[index]]
        if isinstance(sample, SkippedSample):
            return sample
        image = sample["image"]
        height, width = image.shape[-2:]
        observations, maps = self.store.labels(self.ids[index])
        target = torch.zeros(NUM_OBSERVATIONS, height, width)
        if observations:
            soft = maps.float()[:, None] / 255
            soft = functional.interpolate(
                soft, size=(height, width), mode="bilinear", align_corners=False
            )[:, 0]
            target[observations] = soft.clamp(0, 1)
        if self.threshold is not None:
            target = (target >= self.threshold).float() * (target > 0)
        weight = torch.where(
            target > 0, torch.ones_like(target), torch.full_like(target, self.background_weight)
        )
        return {"image": image, "target": target, "weight": weight, "id": self.ids[index]}
