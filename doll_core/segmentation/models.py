"""Segmentation models for DoLL: a seg-head plugin's model behind the classifiers' input
normalisation, with a replaceable output layer (the adapter) and weight transfer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from doll_core._version import __version__
from doll_core.atomic import atomic_torch_save
from doll_core.errors import DollError, PluginError
from doll_core.models import Normalized
from doll_core.payloads import load_payload, safe_torch_load
from doll_core.registry import Registry, get_registry
from doll_core.state_dicts import describe_mismatch

SEGMENTER_FORMAT = "doll-segmenter"
SEGMENTER_VERSION = 1


class ResidualAdapter(nn.Module):
    """A light adapter block: ``x + up(relu(down(x)))`` with 1x1 convolutions, the last
    one zero-initialised so that it starts as the identity."""

    def __init__(self, channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(cast(torch.Tensor, self.up.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class Segmenter(Normalized):
    """``images [B, C, H, W]`` in [0, 1] -> logits ``[B, classes, H, W]``; ``net`` is the
    seg-head plugin's model (with ``encoder`` and ``segmentation_head``), behind the
    input normalisation of :class:`~doll_core.models.Normalized`."""

    @property
    def encoder(self) -> nn.Module:
        return cast(nn.Module, cast(Any, self.net).encoder)

    def output_conv(self) -> nn.Conv2d:
        """The output layer (the last convolution at the start of smp's
        ``segmentation_head``, behind an adapter block if one was added)."""
        head: Any = getattr(self.net, "segmentation_head", None)
        first = head[0] if head is not None else None
        if isinstance(first, nn.Sequential):
            first = first[-1]
        if not isinstance(first, nn.Conv2d):
            raise PluginError(
                "the segmentation model has no segmentation_head starting with a "
                "convolution, so its output layer cannot be replaced"
            )
        return first

    def replace_output(self, classes: int, adapter: bool = False, seed: int = 0) -> None:
        """A new output layer for ``classes`` downstream classes (seeded init), optionally
        behind a zero-initialised residual adapter block."""
        old = self.output_conv()
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            conv_options: dict[str, Any] = {"kernel_size": old.kernel_size, "padding": old.padding}
            new: nn.Module = nn.Conv2d(old.in_channels, classes, **conv_options)
            if adapter:
                new = nn.Sequential(ResidualAdapter(old.in_channels), new)
        finally:
            torch.set_rng_state(generator_state)
        cast(Any, self.net).segmentation_head[0] = new

    def head_parameters(self) -> list[nn.Parameter]:
        return list(cast(Any, self.net).segmentation_head.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        encoder = {id(p) for p in self.encoder.parameters()}
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.net.parameters() if id(p) not in encoder | head]


@dataclass(frozen=True)
class SegmenterMeta:
    """Everything about a segmentation model except its weights."""

    head: str
    head_params: dict[str, Any]
    encoder: str
    classes: tuple[str, ...]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stage: str = "pretrain"
    adapter_blocks: bool = False
    training_config: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    doll_version: str = __version__


def build_segmenter(meta: SegmenterMeta, registry: Registry | None = None) -> Segmenter:
    """A freshly initialised model of ``meta``'s architecture (encoder_weights=None)."""
    registry = registry or get_registry()
    net = registry.create("seg_head", meta.head, **meta.head_params).build(
        meta.encoder, classes=len(meta.classes), in_channels=meta.in_channels
    )
    if getattr(net, "encoder", None) is None:
        raise PluginError(f"seg head {meta.head!r} built a model without an 'encoder'")
    model = Segmenter(net, meta.mean, meta.std)
    if meta.adapter_blocks:
        model.replace_output(len(meta.classes), adapter=True)
    return model


def save_segmenter(path: str | Path, model: Segmenter, meta: SegmenterMeta) -> None:
    module = getattr(model, "module", model)
    payload = {
        "format": SEGMENTER_FORMAT,
        "format_version": SEGMENTER_VERSION,
        "meta": {
            **asdict(meta),
            "classes": list(meta.classes),
            "mean": list(meta.mean),
            "std": list(meta.std),
        },
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    atomic_torch_save(payload, path)


def load_segmenter(
    path: str | Path, registry: Registry | None = None
) -> tuple[Segmenter, SegmenterMeta]:
    """Build and load a segmentation checkpoint (checked, weights_only)."""
    path = Path(path)
    payload = load_payload(
        path,
        file_format=SEGMENTER_FORMAT,
        max_version=SEGMENTER_VERSION,
        what="segmentation checkpoint",
    )
    raw = dict(payload["meta"])
    for key in ("classes", "mean", "std"):
        raw[key] = tuple(raw[key])
    meta = SegmenterMeta(**raw)
    model = build_segmenter(meta, registry)
    details = describe_mismatch(model.state_dict(), payload["state_dict"])
    if details:
        raise DollError(f"{path}: weights do not fit {meta.head}/{meta.encoder}: {details}")
    model.load_state_dict(payload["state_dict"])
    return model, meta


def load_user_weights(model: Segmenter, path: str | Path) -> dict[str, list[str]]:
    """Load any user state dict (e.g. ImageNet encoder weights kept locally) into the
    model where names and shapes fit; returns which keys loaded and which did not."""
    state = safe_torch_load(path, "weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DollError(f"{path} does not hold a state dict")
    own = model.state_dict()
    candidates: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for name in (key, f"net.{key}", f"net.encoder.{key}"):
            if name in own and own[name].shape == value.shape:
                candidates[name] = value
                break
    model.load_state_dict(candidates, strict=False)
    return {
        "loaded": sorted(candidates),
        "not_loaded": sorted(
            k
            for k in state
            if not any(n in candidates for n in (k, f"net.{k}", f"net.encoder.{k}"))
        ),
        "left_random": sorted(set(own) - set(candidates)),
    }
