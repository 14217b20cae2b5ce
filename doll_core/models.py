"""The classifier every stage uses: a backbone plugin's network behind a fixed input
normalisation, so that callers (training, explainers) work on images in ``[0, 1]``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn


class Normalized(nn.Module):
    """``net`` behind a fixed per-channel input normalisation ``(x - mean) / std``: callers
    pass images ``[B, C, H, W]`` in ``[0, 1]``, and the statistics travel with the
    weights (buffers ``mean`` and ``std``, ``[1, C, 1, 1]``)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError("mean and std need one value per channel, std > 0")
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.net((images - self.mean) / self.std))


class Classifier(Normalized):
    """``images [B, C, H, W]`` in ``[0, 1]`` -> logits ``[B, num_classes]``.

    ``net`` is the backbone plugin's model (``Backbone.build``); the normalisation
    ``(x - mean) / std`` per channel is part of the module, so attributions are taken
    with respect to the image itself.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        cam_layer: str | None = None,
    ) -> None:
        """:param cam_layer: the dotted name, inside ``net``, of the layer CAM-type
        explainers hook (the backbone plugin's ``cam_layer``)."""
        super().__init__(net, mean, std)
        #: dotted name of the CAM layer inside this module (``net.<backbone cam_layer>``)
        self.cam_layer = f"net.{cam_layer}" if cam_layer else None
