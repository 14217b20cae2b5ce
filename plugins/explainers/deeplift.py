"""DeepLift (rescale rule) from captum, one call per target slot."""

from __future__ import annotations

import torch
from captum.attr import DeepLift as CaptumDeepLift
from torch import nn

from doll_core.attribution.engine import frozen_eval
from doll_core.errors import PluginError
from doll_plugins.explainers.baselines import BLUR_SIGMA, check_baseline, make_baseline

_NONLINEAR = (nn.ReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.LeakyReLU, nn.GELU, nn.SiLU)


def reused_activations(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of activation modules called more than once in one forward pass."""
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _NONLINEAR):
            handles.append(
                module.register_forward_hook(
                    lambda _m, _i, _o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
                )
            )
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return sorted(name for name, count in calls.items() if count > 1)


class DeepLift:
    """DeepLift (rescale rule, captum): contributions relative to a baseline."""

    def __init__(
        self, baseline: str | float = "zeros", blur_sigma: float = BLUR_SIGMA, seed: int = 0
    ) -> None:
        self.baseline = check_baseline(baseline)
        self.blur_sigma, self.seed = blur_sigma, seed

    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """images ``[B, C, H, W]``, targets ``long [B, T]`` -> ``[B, T, H, W]``."""
        with frozen_eval(model):
            reused = reused_activations(model, images)
            if reused:
                raise PluginError(
                    f"deeplift: activation module(s) {reused[:3]} run more than once per "
                    "forward pass (torchvision's ResNets share one ReLU per block), and "
                    "captum's DeepLift is wrong for shared activations; use "
                    "integrated_gradients, or a backbone without shared activations"
                )
            baseline = make_baseline(
                images, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed
            )
            explainer = CaptumDeepLift(model)
            maps = torch.zeros(
                targets.shape[0], targets.shape[1], *images.shape[-2:], device=images.device
            )
            for j in range(targets.shape[1]):
                wanted = targets[:, j] >= 0
                if not bool(wanted.any()):
                    continue
                result = explainer.attribute(
                    images, baselines=baseline, target=targets[:, j].clamp(min=0).tolist()
                )
                maps[:, j] = result.detach().float().sum(dim=1) * wanted[:, None, None]
        return maps
