"""Grad-CAM on the layer the backbone names, all targets from one forward pass."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from doll_core.attribution.engine import (
    EngineOptions,
    engine_or_default,
    frozen_eval,
    rows_per_chunk,
)
from doll_core.errors import DollError


def cam_layer_of(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """The module Grad-CAM hooks: ``layer`` (dotted name) or the model's ``cam_layer``."""
    name = layer or getattr(model, "cam_layer", None)
    if not name:
        raise DollError(
            "gradcam needs a layer: pass layer='...' or use a classifier built by DoLL, "
            "whose backbone names its CAM layer"
        )
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        raise DollError(f"gradcam: the model has no layer {name!r}") from None


class GradCAM:
    """Grad-CAM: the layer's activations weighted by their mean gradient, ReLU, upsampled."""

    def __init__(
        self,
        layer: str | None = None,
        relu: bool = True,
        interpolation: str = "bilinear",
        *,
        engine: EngineOptions | None = None,
    ) -> None:
        """:param layer: dotted module name (default: the backbone's CAM layer).
        :param engine: execution options; Grad-CAM uses their row limit (``max_rows``,
            ``memory_budget_mb``) only.
        :param interpolation: how the map is upsampled to the image (``bilinear``,
            ``nearest``, ``bicubic``)."""
        self.layer, self.relu, self.interpolation = layer, relu, interpolation
        self.options = engine_or_default(engine)  # its row limits batch the passes

    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """images ``[B, C, H, W]``, targets ``long [B, T]`` -> ``[B, T, H, W]``."""
        _, module = cam_layer_of(model, self.layer)
        batch, slots = targets.shape
        maps = torch.zeros(batch, slots, *images.shape[-2:], device=images.device)
        captured: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with frozen_eval(model):
                step = rows_per_chunk(model, images[:1], self.options)
                for start in range(0, batch, step):
                    part = slice(start, start + step)
                    chunk_targets = targets[part]
                    live = [j for j in range(slots) if bool((chunk_targets[:, j] >= 0).any())]
                    if not live:
                        continue
                    captured.clear()
                    with torch.enable_grad():
                        inputs = images[part].detach().requires_grad_(True)
                        logits = model(inputs)
                    activation = captured[-1]
                    for position, j in enumerate(live):
                        wanted = chunk_targets[:, j] >= 0
                        picked = logits.gather(1, chunk_targets[:, j].clamp(min=0)[:, None])[:, 0]
                        (grad,) = torch.autograd.grad(
                            (picked * wanted).sum(),
                            activation,
                            retain_graph=position < len(live) - 1,
                        )
                        weights = grad.mean(dim=(2, 3), keepdim=True)
                        cam = (weights * activation).sum(dim=1, keepdim=True)
                        if self.relu:
                            cam = functional.relu(cam)
                        cam = functional.interpolate(
                            cam.detach().float(), size=images.shape[-2:], mode=self.interpolation
                        )
                        maps[part, j] = cam[:, 0] * wanted[:, None, None]
        finally:
            handle.remove()
        return maps
