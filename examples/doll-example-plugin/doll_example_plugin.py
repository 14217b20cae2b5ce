"""A third-party DoLL explainer: the sign of the input gradient, summed over channels."""

import torch

from doll_core import hookimpl


class GradientSign:
    """Sign of d logit[target] / d input, summed over input channels."""

    def __init__(self, absolute: bool = False) -> None:
        self.absolute = absolute  # count every sensitive pixel as +1 per channel

    def attribute(self, model, images, targets):
        """images [B, C, H, W], targets long [B, T] (-1 = none) -> float32 [B, T, H, W]."""
        batch, num_targets = targets.shape
        maps = torch.zeros(batch, num_targets, *images.shape[2:], device=images.device)
        inputs = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(inputs)  # [B, num_classes]
            for slot in range(num_targets):
                wanted = targets[:, slot] >= 0  # images that have a j-th target
                if not wanted.any():
                    continue
                chosen = logits.gather(1, targets[:, slot].clamp(min=0)[:, None])[:, 0]
                (grad,) = torch.autograd.grad(chosen[wanted].sum(), inputs, retain_graph=True)
                sign = grad.sign().abs() if self.absolute else grad.sign()
                maps[:, slot] = sign.sum(dim=1) * wanted[:, None, None]
        return maps.float()


@hookimpl
def doll_register_explainers(register):
    register("gradient_sign", GradientSign)
