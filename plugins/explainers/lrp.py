"""Layer-wise relevance propagation with zennit composites, all targets from one forward.

Canonizers make the rules valid: BatchNorm is merged into the convolution before it
(``SequentialMergeBatchNorm``), and torchvision ResNets get zennit's ``ResNetCanonizer``
(which also handles the residual sums). DenseNet is refused: it normalises *before* each
convolution (norm-relu-conv), which zennit 0.5.1 cannot merge, so relevance would not be
conserved and the map would be wrong.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from doll_core.attribution.engine import frozen_eval
from doll_core.errors import DollError, PluginError
from doll_core.models import Classifier

COMPOSITES = ("epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon_gamma_box")


def _canonizers(net: nn.Module) -> list[Any]:
    if any(isinstance(m, torchvision.models.DenseNet) for m in net.modules()):
        raise PluginError(
            "lrp: DenseNet is not supported: it applies BatchNorm before each convolution "
            "and zennit 0.5.1 has no canonizer for that, so relevance would not be "
            "conserved; use integrated_gradients, or a resnet or tiny_cnn backbone for lrp"
        )
    if any(isinstance(m, torchvision.models.ResNet) for m in net.modules()):
        return [ResNetCanonizer()]
    return [SequentialMergeBatchNorm()]


class LRP:
    """Layer-wise relevance propagation (zennit composites, BatchNorm canonized)."""

    def __init__(self, composite: str = "epsilon_plus_flat", epsilon: float = 1e-6) -> None:
        """:param composite: ``epsilon_plus_flat`` (default), ``epsilon_alpha2_beta1_flat``
        or ``epsilon_gamma_box`` (bounded by the normalised range of [0, 1] images)."""
        if composite not in COMPOSITES:
            raise DollError(f"composite must be one of {', '.join(COMPOSITES)}, got {composite!r}")
        self.composite, self.epsilon = composite, epsilon

    def _make_composite(self, net: nn.Module, low: float, high: float) -> Any:
        canonizers = _canonizers(net)
        if self.composite == "epsilon_plus_flat":
            return EpsilonPlusFlat(epsilon=self.epsilon, canonizers=canonizers)
        if self.composite == "epsilon_alpha2_beta1_flat":
            return EpsilonAlpha2Beta1Flat(epsilon=self.epsilon, canonizers=canonizers)
        return EpsilonGammaBox(low=low, high=high, epsilon=self.epsilon, canonizers=canonizers)

    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """images ``[B, C, H, W]``, targets ``long [B, T]`` -> ``[B, T, H, W]``: the
        relevance of each (normalised) input pixel, summed over channels."""
        net, inputs, low, high = model, images, 0.0, 1.0
        if isinstance(model, Classifier):  # relevance of the pixels, not of the normaliser
            net = model.net
            inputs = (images - model.mean) / model.std
            low = float(((0 - model.mean) / model.std).min())
            high = float(((1 - model.mean) / model.std).max())
        batch, slots = targets.shape
        maps = torch.zeros(batch, slots, *images.shape[-2:], device=images.device)
        live = [j for j in range(slots) if bool((targets[:, j] >= 0).any())]
        if not live:
            return maps
        with frozen_eval(model):
            composite = self._make_composite(net, low, high)
            with composite.context(net) as modified, torch.enable_grad():
                rows = inputs.detach().clone().requires_grad_(True)
                logits = modified(rows)
                for position, j in enumerate(live):
                    wanted = targets[:, j] >= 0
                    one_hot = torch.zeros_like(logits)
                    one_hot[wanted, targets[wanted, j]] = 1.0
                    (relevance,) = torch.autograd.grad(
                        logits, rows, grad_outputs=one_hot, retain_graph=position < len(live) - 1
                    )
                    maps[:, j] = relevance.detach().float().sum(dim=1) * wanted[:, None, None]
        return maps
