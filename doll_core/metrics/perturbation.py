"""Batched perturbation curves: the model's output for a target while the pixels its map
ranks highest (or lowest) are replaced by a baseline, step by step, for every image and
target of a batch in shared forward passes.

One perturbed image is needed per (image, target, step); they are built and sent through
the model ``max_rows`` at a time, never one sample at a time.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from doll_core.errors import DollError

Output = Literal["probability", "logit"]
Order = Literal["morf", "lerf"]
OUTPUTS = ("probability", "logit")


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``.

    :raises DollError: naming ``what``, the value and the choices.
    """
    if value not in choices:
        raise DollError(f"unknown {what} {value!r}; choose {', '.join(choices)}")
    return value


@torch.no_grad()
def target_outputs(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    *,
    output: Output = "probability",
    max_rows: int = 256,
) -> torch.Tensor:
    """float64 ``[N]``: the model's output for ``classes[i]`` (long ``[N]``) on
    ``images[i]`` (``[N, C, H, W]``), ``max_rows`` images per forward pass; ``output``
    is the logit or its sigmoid (each observation is a binary decision)."""
    values = []
    for start in range(0, images.shape[0], max_rows):
        logits = model(images[start : start + max_rows]).double()
        picked = logits.gather(1, classes[start : start + max_rows, None].to(logits.device))[:, 0]
        values.append(torch.sigmoid(picked) if output == "probability" else picked)
    if not values:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(values).cpu()


def patch_grid(height: int, width: int, patch: int) -> tuple[torch.Tensor, int]:
    """``(index [H, W], P)``: each pixel's patch (square ``patch`` cells in row-major
    order; the last row and column of cells may be smaller) and the number of patches."""
    if patch < 1:
        raise DollError(f"patch size must be >= 1, got {patch}")
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    y = torch.arange(height)[:, None] // patch
    x = torch.arange(width)[None, :] // patch
    return y * cols + x, rows * cols


def patch_ranks(
    maps: torch.Tensor, index: torch.Tensor, patches: int, order: Order
) -> torch.Tensor:
    """long ``[N, P]``: the place (0 = first removed) of each patch, patches ranked by the
    sum of the map ``[N, H, W]`` over them, highest first (``morf``) or lowest first
    (``lerf``); ties by patch position."""
    flat = maps.flatten(1).double()
    sums = torch.zeros(flat.shape[0], patches, dtype=torch.float64, device=flat.device)
    sums.index_add_(1, index.flatten().to(flat.device), flat)
    key = -sums if order == "morf" else sums
    order_of = torch.sort(key, dim=1, stable=True).indices
    ranks = torch.empty_like(order_of)
    ranks.scatter_(1, order_of, torch.arange(patches, device=flat.device).expand_as(order_of))
    return ranks


def removal_counts(patches: int, steps: int) -> list[int]:
    """How many patches are replaced at each of the ``steps + 1`` points of a curve:
    ``round(k * P / steps)`` for ``k = 0 … steps`` (0 and all included)."""
    if steps < 1:
        raise DollError(f"steps must be >= 1, got {steps}")
    return [round(k * patches / steps) for k in range(steps + 1)]


def perturbation_curves(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    baseline: torch.Tensor,
    *,
    patch: int,
    steps: int,
    order: Order = "morf",
    insertion: bool = False,
    output: Output = "probability",
    max_rows: int = 256,
) -> torch.Tensor:
    """float64 ``[B, T, steps + 1]``: deletion (or insertion) curves of every target.

    Point ``k`` of a deletion curve is the output for the target after the first
    ``round(k * P / steps)`` patches in the map's ``order`` were replaced by ``baseline``
    (point 0: the image itself; the last: the baseline). An insertion curve starts from
    the baseline and puts the image's patches back in the same order. Padding slots are
    ``nan``.

    :param images: ``[B, C, H, W]``; :param maps: ``[B, T, H, W]``; :param targets: long
        ``[B, T]``; :param baseline: ``[B, C, H, W]``.
    """
    batch, slots, height, width = maps.shape
    index, patches = patch_grid(height, width, patch)
    index = index.to(maps.device)
    real = targets >= 0
    pairs = real.nonzero()  # [M, 2]: (image, slot)
    curves = torch.full((batch, slots, steps + 1), torch.nan, dtype=torch.float64)
    if pairs.shape[0] == 0:
        return curves
    ranks = patch_ranks(maps[real], index, patches, order)  # [M, P]
    counts = torch.tensor(removal_counts(patches, steps), device=maps.device)
    pixel_ranks = ranks[:, index.flatten()].view(-1, 1, height, width)  # [M, 1, H, W]
    classes = targets[real]
    rows_per_pair = steps + 1
    values = torch.empty(pairs.shape[0], rows_per_pair, dtype=torch.float64)
    pairs_per_chunk = max(1, max_rows // rows_per_pair)
    for start in range(0, pairs.shape[0], pairs_per_chunk):
        chunk = slice(start, start + pairs_per_chunk)
        image_of = pairs[chunk, 0]
        replaced = pixel_ranks[chunk, None] < counts[None, :, None, None, None]  # [m,S,1,H,W]
        if insertion:
            replaced = ~replaced
        source = images[image_of][:, None]  # [m, 1, C, H, W]
        reference = baseline[image_of][:, None]
        perturbed = torch.where(replaced, reference, source).flatten(0, 1)
        chunk_classes = classes[chunk].repeat_interleave(rows_per_pair)
        outputs = target_outputs(model, perturbed, chunk_classes, output=output, max_rows=max_rows)
        values[chunk] = outputs.view(-1, rows_per_pair)
    curves[real.cpu()] = values
    return curves


def curve_area(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under curves ``[..., S + 1]`` whose points are evenly spaced on
    ``[0, 1]`` (the share of the image perturbed): ``[...]``, in the output's units."""
    steps = curves.shape[-1] - 1
    return (curves.sum(dim=-1) - (curves[..., 0] + curves[..., -1]) / 2) / steps
