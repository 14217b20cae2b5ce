"""From raw attribution maps to soft and binary pseudo labels ("distill and boost").

Steps, in this order, each configurable and off-able: sign (positive part or absolute
value), Gaussian smoothing, clipping at a percentile and scaling to [0, 1] per map, gamma
sharpening, probability gating (a map whose class probability is below ``gate`` becomes
zero), and binarisation (fixed threshold, top-k % of pixels, or Otsu). A map with no
signal (all zero after the sign step, or holding NaN/Inf) is zeroed and counted: nothing
is ever divided by zero. The result does not depend on a map's scale: 1e-30 and 3e38
attributions give the labels that 1.0 attributions give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torchvision.transforms.functional import gaussian_blur

from doll_core.configuration import Settings


class PostprocessConfig(Settings):
    """Post-processing settings (see the module docstring for the order)."""

    sign: Literal["positive", "absolute", "none"] = Field(
        "positive",
        description="keep the positive part of each map, its absolute value, or both signs",
    )
    smooth_sigma: float = Field(0.0, ge=0, description="Gaussian sigma in pixels; 0 = off")
    clip_percentile: float | None = Field(
        99.0,
        gt=0,
        le=100,
        description=(
            "clip each map at this percentile before scaling it to [0, 1]; None = its maximum"
        ),
    )
    gamma: float | None = Field(
        None,
        gt=0,
        description="raise the scaled map to this power (> 1 sharpens); None = off",
    )
    gate: float | None = Field(None, ge=0, le=1, description="zero maps with probability < gate")
    binarize: Literal["none", "threshold", "topk", "otsu"] = Field(
        "otsu",
        description=(
            "hard labels: none (soft only), a fixed threshold, top-k % of pixels, or Otsu"
        ),
    )
    threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="binarize = 'threshold': the cut on the scaled map",
    )
    top_k_percent: float = Field(
        5.0,
        gt=0,
        le=100,
        description="binarize = 'topk': the share of pixels labelled positive",
    )


@dataclass
class Postprocessed:
    """``soft``: float32 ``[B, T, H, W]`` in [0, 1]; ``binary``: bool ``[B, T, H, W]`` (or
    None); ``no_signal``: how many maps (of real targets) had no signal and were zeroed."""

    soft: torch.Tensor
    binary: torch.Tensor | None
    no_signal: int


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance)."""
    histogram = torch.histc(values.float(), bins=bins, min=0.0, max=1.0).double()
    total = histogram.sum()
    if total == 0:
        return 1.0
    centers = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    weight_low = torch.cumsum(histogram, 0)
    weight_high = total - weight_low
    mass_low = torch.cumsum(histogram * centers, 0)
    mean_low = mass_low / weight_low.clamp(min=1e-12)
    mean_high = (mass_low[-1] - mass_low) / weight_high.clamp(min=1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between[(weight_low == 0) | (weight_high == 0)] = -1
    best = int(torch.argmax(between))
    return float(best + 1) / bins  # values above the upper edge of the best bin


def _unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """Each map ``[B, T, H, W]`` times the power of two that brings its largest magnitude
    into [1, 2): exact, so the result is unchanged, while huge maps cannot overflow (the
    span of +-3e38 is inf in float32) and tiny ones are not lost to an epsilon."""
    peak = maps.detach().abs().flatten(2).amax(dim=2).double()
    exponent = torch.where(peak > 0, torch.floor(torch.log2(peak)), torch.zeros_like(peak))
    factor = torch.exp2(-exponent)[:, :, None, None]  # float64: 2**149 for subnormal maps
    return (maps.double() * factor).float()


def postprocess(
    maps: torch.Tensor,
    config: PostprocessConfig,
    *,
    targets: torch.Tensor | None = None,
    probabilities: torch.Tensor | None = None,
) -> Postprocessed:
    """Turn raw maps ``[B, T, H, W]`` into soft and binary labels.

    :param targets: ``[B, T]``; maps of -1 targets stay zero and are not counted.
    :param probabilities: ``[B, T]`` class probability of each map (for ``gate``).
    """
    maps = maps.detach().float().clone()
    batch, slots = maps.shape[:2]
    real = (targets >= 0) if targets is not None else torch.ones(batch, slots, dtype=torch.bool)
    real = real.to(maps.device)
    finite = torch.isfinite(maps).flatten(2).all(dim=2)
    maps = torch.where(finite[:, :, None, None], maps, torch.zeros_like(maps))
    if config.sign == "positive":
        maps = maps.clamp(min=0)
    elif config.sign == "absolute":
        maps = maps.abs()
    maps = _unit_scale(maps)
    # flat at its floor: no signal, whatever rounding the smoothing below adds to it
    raw = maps.flatten(2)
    floor = raw.amin(dim=2).clamp(max=0) if config.sign == "none" else torch.zeros_like(raw[..., 0])
    has_signal = raw.amax(dim=2) > floor
    if config.smooth_sigma > 0:
        radius = max(1, math.ceil(3 * config.smooth_sigma))
        size = min(2 * radius + 1, 2 * (min(maps.shape[-2:]) // 2) - 1)
        flat = maps.view(batch * slots, 1, *maps.shape[-2:])
        maps = gaussian_blur(flat, [max(size, 1)] * 2, [config.smooth_sigma] * 2).view_as(maps)
    flat = maps.flatten(2)
    if config.clip_percentile is not None and config.clip_percentile < 100:
        high = torch.quantile(flat, config.clip_percentile / 100, dim=2, keepdim=True)
    else:
        high = flat.amax(dim=2, keepdim=True)
    low = flat.amin(dim=2, keepdim=True).clamp(max=0) if config.sign == "none" else 0.0
    # a sparse map (fewer non-zero pixels than 100 - clip_percentile %) has its percentile
    # at the floor: it is scaled by its maximum rather than dropped as having no signal
    high = torch.where(high > low, high, flat.amax(dim=2, keepdim=True))
    span = high - low
    signal = (span > 0).squeeze(2) & has_signal & finite & real
    scaled = ((flat - low) / torch.where(span > 0, span, 1.0)).clamp(0, 1)
    scaled = torch.where(signal[:, :, None], scaled, torch.zeros_like(scaled)).view_as(maps)
    if config.gamma is not None:
        scaled = scaled**config.gamma
    if config.gate is not None and probabilities is not None:
        keep = probabilities.to(scaled.device) >= config.gate
        scaled = scaled * keep[:, :, None, None]
    binary = None
    if config.binarize != "none":
        binary = torch.zeros_like(scaled, dtype=torch.bool)
        for b in range(batch):
            for j in range(slots):
                soft = scaled[b, j]
                if not bool(soft.any()):
                    continue
                if config.binarize == "threshold":
                    binary[b, j] = soft >= config.threshold
                elif config.binarize == "topk":
                    k = max(1, round(soft.numel() * config.top_k_percent / 100))
                    cutoff = torch.topk(soft.flatten(), k).values[-1]
                    binary[b, j] = (soft >= cutoff) & (soft > 0)
                else:
                    binary[b, j] = soft >= otsu_threshold(soft.flatten())
    return Postprocessed(scaled, binary, int((real & ~signal).sum()))
