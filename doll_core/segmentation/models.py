"""Segmentation models for DoLL: a seg-head plugin's model behind the classifiers' input
normalisation, with a replaceable output layer (the adapter) and weight transfer."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from doll_core._version import __version__
from doll_core.atomic import atomic_torch_save
from doll_core.errors import DollError, PluginError
from doll_core.interfaces import SegHead
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
    model that the seg-head plugin ``seg_head`` (registered as ``head_name``) built, behind
    the input normalisation of :class:`~doll_core.models.Normalized`.

    The encoder, the output layer and the three parameter groups (encoder, decoder, head)
    are reached only through the :class:`~doll_core.interfaces.SegHead` contract: the
    attribute ``encoder`` and the plugin's ``output_layer`` / ``set_output_layer``.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        seg_head: SegHead,
        head_name: str,
    ) -> None:
        super().__init__(net, mean, std)
        # plain attributes, never submodules: the plugin object carries no weights
        object.__setattr__(self, "seg_head", seg_head)
        self.head_name = head_name

    seg_head: SegHead

    @property
    def encoder(self) -> nn.Module:
        return cast(nn.Module, cast(Any, self.net).encoder)

    def output_layer(self) -> nn.Module:
        """The module in the output slot, as the seg-head plugin reports it: its output
        convolution, or that convolution behind an adapter block after
        :meth:`replace_output`."""
        return self.seg_head.output_layer(self.net)

    def output_conv(self) -> nn.Conv2d:
        """The output convolution (behind the adapter block, if one was added)."""
        layer = self.output_layer()
        if (
            isinstance(layer, nn.Sequential)
            and len(layer) == 2
            and isinstance(layer[0], ResidualAdapter)
        ):
            layer = layer[1]
        if not isinstance(layer, nn.Conv2d):
            raise PluginError(
                f"seg head {self.head_name!r}: output_layer(model) returned a "
                f"{type(layer).__name__}, not the nn.Conv2d that maps the decoder's features to "
                "the logits, so the output layer cannot be replaced (see "
                "doll_core.interfaces.SegHead)"
            )
        return layer

    def replace_output(self, classes: int, adapter: bool = False, seed: int = 0) -> None:
        """A new output layer for ``classes`` downstream classes (seeded init, the old
        convolution's kernel size, stride, padding, dilation and bias), optionally behind
        a zero-initialised residual adapter block, put in place by the seg-head plugin."""
        old = self.output_conv()
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            like_old: dict[str, Any] = {
                "kernel_size": old.kernel_size,
                "stride": old.stride,
                "padding": old.padding,
                "dilation": old.dilation,
                "bias": old.bias is not None,
                "padding_mode": old.padding_mode,
            }
            new: nn.Module = nn.Conv2d(old.in_channels, classes, **like_old)
            if adapter:
                new = nn.Sequential(ResidualAdapter(old.in_channels), new)
        finally:
            torch.set_rng_state(generator_state)
        self.seg_head.set_output_layer(self.net, new)
        if self.output_layer() is not new or not any(m is new for m in self.net.modules()):
            raise PluginError(
                f"seg head {self.head_name!r}: after set_output_layer(model, layer), "
                "output_layer(model) must return that layer, a submodule of the model (see "
                "doll_core.interfaces.SegHead)"
            )

    def head_parameters(self) -> list[nn.Parameter]:
        """The output layer's parameters (adapter block included)."""
        return list(self.output_layer().parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is neither the encoder's nor the output layer's."""
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
    seg_head = registry.create("seg_head", meta.head, **meta.head_params)
    net = seg_head.build(meta.encoder, classes=len(meta.classes), in_channels=meta.in_channels)
    if getattr(net, "encoder", None) is None:
        raise PluginError(f"seg head {meta.head!r} built a model without an 'encoder'")
    model = Segmenter(net, meta.mean, meta.std, seg_head, meta.head)
    if model.output_conv().out_channels != len(meta.classes):
        raise PluginError(
            f"seg head {meta.head!r}: output_layer(model) has "
            f"{model.output_conv().out_channels} output channels, but the model was built "
            f"for {len(meta.classes)} classes (see doll_core.interfaces.SegHead)"
        )
    if meta.adapter_blocks:
        model.replace_output(len(meta.classes), adapter=True)
    return model


def probe_segmenter(
    head: str,
    head_params: dict[str, Any],
    encoder: str,
    in_channels: int,
    registry: Registry | None = None,
) -> Segmenter:
    """A one-class model of this architecture with random weights: what a check before
    any work builds, when the task's classes are not known yet."""
    meta = SegmenterMeta(
        head=head,
        head_params=dict(head_params),
        encoder=encoder,
        classes=("class",),
        in_channels=in_channels,
        image_size=64,
        mean=(0.5,) * in_channels,
        std=(0.25,) * in_channels,
    )
    return build_segmenter(meta, registry)


def check_user_weights(probe: Segmenter, path: str | Path, *, allow_partial: bool) -> None:
    """Would ``path`` start a fine-tuning of ``probe``'s architecture
    (:func:`load_user_weights`, the output layer counted as fitting since its shape
    follows the task's classes: at most that much more lenient than the run)?

    :raises DollError: as :func:`load_user_weights`.
    """
    load_user_weights(
        probe, path, allow_partial=allow_partial, count_as_fitting=output_tensor_names(probe)
    )


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


#: The least share of a model's tensors a user's weights file must fit (names and shapes)
#: to start a fine-tuning from it, unless ``allow_partial``: an encoder-only file of a
#: U-Net fits about two thirds; a file of another model fits next to none.
MIN_LOADED_FRACTION = 0.5


def output_tensor_names(model: Segmenter) -> set[str]:
    """The names (in ``model.state_dict()``) of the output layer's parameters, whose
    shapes follow the task's classes."""
    ids = {id(p) for p in model.output_layer().parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def load_user_weights(
    model: Segmenter,
    path: str | Path,
    *,
    allow_partial: bool = False,
    count_as_fitting: Collection[str] = (),
) -> dict[str, list[str]]:
    """Load any user state dict (e.g. ImageNet encoder weights kept locally) into the
    model where names and shapes fit; returns which keys loaded and which did not.

    :param count_as_fitting: names of the model's tensors counted as fitting whatever the
        file holds (a check before work, on a model built before the task's classes are
        known, counts the output layer's: :func:`output_tensor_names`).
    :raises DollError: when fewer than :data:`MIN_LOADED_FRACTION` of the model's tensors
        fit and not ``allow_partial``, naming how many fit and some that would stay random.
    """
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
    own_count = max(len(own), 1)
    fitting = len(set(candidates) | (set(count_as_fitting) & set(own)))
    if not allow_partial and fitting < MIN_LOADED_FRACTION * own_count:
        random = sorted(set(own) - set(candidates))
        raise DollError(
            f"{path}: only {len(candidates)} of the model's {len(own)} tensors fit it (by name "
            f"and shape), so {len(random)} would stay random (e.g. {', '.join(random[:3])}). "
            "Give the weights of this model (or of its encoder), or set finetune "
            "allow_partial = true to start from them anyway."
        )
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
