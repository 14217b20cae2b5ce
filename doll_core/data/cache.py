"""A dataset that keeps each sample after its first read.

Fine-tuning with few labels reads the same handful of images every step (8 labelled
images, 200 steps of batch 8: 1,600 decodes of 8 files) and validates on the same images
every ``eval_interval`` steps. Segmentation samples are not augmented, so a sample read
once is the sample read again: keeping it changes no result, only the time.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


class CachedSamples(Dataset):
    """``dataset``'s samples, each read once and then served from memory.

    The cache lives in the process that reads: with ``num_workers = 0`` (or persistent
    DataLoader workers) it fills in the first epoch; with fresh workers every epoch it
    never fills, and nothing but the memory is lost. Samples are returned as stored, so
    callers must not change them in place (``collate_samples`` stacks copies).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._samples: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index not in self._samples:
            self._samples[index] = self.dataset[index]
        return self._samples[index]
