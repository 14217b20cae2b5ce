"""Occlusion, with windows batched and every target read from the same forward pass."""

from __future__ import annotations

import torch
from torch import nn

from doll_core.attribution.engine import (
    EngineOptions,
    engine_or_default,
    frozen_eval,
    rows_per_chunk,
)
from doll_core.errors import DollError


class Occlusion:
    """Occlusion: the drop of each target's logit when a window is replaced by a baseline,
    averaged over the windows that cover each pixel."""

    def __init__(
        self,
        window: int = 16,
        stride: int = 8,
        baseline: float = 0.0,
        *,
        engine: EngineOptions | None = None,
    ) -> None:
        """:param window: side of the square window in pixels (all channels at once).
        :param engine: execution options; Occlusion uses their row limit (``max_rows``,
            ``memory_budget_mb``) only.
        :param stride: step between windows. :param baseline: value put in the window."""
        if window < 1 or stride < 1:
            raise DollError("window and stride must be >= 1")
        self.window, self.stride, self.baseline = window, stride, baseline
        self.options = engine_or_default(engine)  # its row limits batch the passes

    @torch.no_grad()
    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """images ``[B, C, H, W]``, targets ``long [B, T]`` -> ``[B, T, H, W]``."""
        batch, slots = targets.shape
        height, width = images.shape[-2:]
        k = min(self.window, height, width)
        tops = list(range(0, height - k + 1, self.stride))
        lefts = list(range(0, width - k + 1, self.stride))
        positions = [(t, left) for t in tops for left in lefts]
        maps = torch.zeros(batch, slots, height, width, device=images.device)
        coverage = torch.zeros(height, width, device=images.device)
        for top, left in positions:
            coverage[top : top + k, left : left + k] += 1
        index = targets.clamp(min=0)
        with frozen_eval(model):
            step = rows_per_chunk(model, images[:1], self.options)
            for b in range(batch):
                if not bool((targets[b] >= 0).any()):
                    continue
                reference = model(images[b : b + 1]).float()[0, index[b]]  # [T]
                for start in range(0, len(positions), step):
                    chunk = positions[start : start + step]
                    occluded = images[b : b + 1].repeat(len(chunk), 1, 1, 1)
                    for row, (top, left) in enumerate(chunk):
                        occluded[row, :, top : top + k, left : left + k] = self.baseline
                    drop = reference[None] - model(occluded).float()[:, index[b]]  # [n, T]
                    for row, (top, left) in enumerate(chunk):
                        maps[b, :, top : top + k, left : left + k] += drop[row][:, None, None]
        maps = torch.where(coverage > 0, maps / coverage.clamp(min=1), torch.zeros_like(maps))
        return maps * (targets >= 0)[:, :, None, None]
