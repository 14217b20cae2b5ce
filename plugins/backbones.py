"""Built-in classifier backbones: torchvision ResNet-18/50, DenseNet-121, and a tiny CNN.

No weights are ever downloaded (``weights=None``); a user with local weights passes a path
to a ``state_dict`` file with ``weights=...``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision
from torch import nn

from doll_core import hookimpl
from doll_core.errors import DollError, PluginError
from doll_core.payloads import safe_torch_load


def _check_sizes(num_classes: int, in_channels: int) -> None:
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DollError(f"{label} must be a positive integer, got {value!r}")


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` that takes ``in_channels`` inputs.

    Weights ``[O, C, k, k]`` become ``[O, in_channels, k, k]`` such that an image whose
    channels are all equal gets the same response as before. With fewer channels, original
    channel ``c`` is added to new channel ``c % in_channels`` (one channel: the sum, so a
    grey image acts like its RGB copy); with more, new channel ``n`` takes original channel
    ``n % C`` divided by the number of new channels that share it.
    """
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    old_channels = conv.in_channels
    mixing = torch.zeros(old_channels, in_channels)  # [C, in_channels]
    if in_channels < old_channels:
        mixing[torch.arange(old_channels), torch.arange(old_channels) % in_channels] = 1.0
    else:
        source = torch.arange(in_channels) % old_channels
        mixing[source, torch.arange(in_channels)] = 1.0 / torch.bincount(source)[source]
    with torch.no_grad():
        new.weight.copy_(torch.einsum("oc...,cn->on...", conv.weight, mixing))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def local_weights_file(weights: str | Path | None) -> Path | None:
    """A backbone's ``weights`` parameter as a path, checked to exist (``None``: random)."""
    path = Path(weights) if weights is not None else None
    if path is not None and not path.is_file():
        raise DollError(f"weights file not found: {path}")
    return path


def load_local_weights(
    model: nn.Module, path: Path, what: str, *, skip: Callable[[str], bool] = lambda k: False
) -> None:
    """Load a local state dict (or a ``{"state_dict": ...}``) into ``model``: every tensor
    but those whose name ``skip`` is true for must fit, by name and shape.

    :raises DollError: naming the file and ``what`` it does not fit.
    """
    state = safe_torch_load(path, "weights file")
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise DollError(f"weights file {path} does not hold a state_dict")
    state = {k: v for k, v in state.items() if not skip(k)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not skip(k)]
    if missing or unexpected:
        raise DollError(
            f"weights file {path} does not fit {what}: "
            f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}"
        )


class TorchvisionBackbone:
    """Common code of the torchvision classifiers; subclasses name the architecture."""

    arch: ClassVar[str]
    #: dotted name of the classification head module, replaced by a ``num_classes`` head
    head: ClassVar[str]
    #: dotted name of the first convolution, adapted to ``in_channels``
    first_conv: ClassVar[str]
    cam_layer: str
    encoder_name: str | None

    def __init__(self, weights: str | Path | None = None, dropout: float = 0.0) -> None:
        """:param weights: optional path to a local torchvision ``state_dict`` of this
            architecture (any head size); its head is dropped.
        :param dropout: dropout probability before the final linear layer."""
        if not 0.0 <= float(dropout) < 1.0:
            raise DollError(f"dropout must be in [0, 1), got {dropout!r}")
        self.weights = local_weights_file(weights)
        self.dropout = float(dropout)

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        """Images ``[B, in_channels, H, W]`` -> logits ``[B, num_classes]``."""
        _check_sizes(num_classes, in_channels)
        model = self._make_model()
        if self.weights is not None:
            self._load_local_weights(model)
        parent, attr = _split(model, self.first_conv)
        setattr(parent, attr, adapt_first_conv(getattr(parent, attr), in_channels))
        parent, attr = _split(model, self.head)
        old_head: nn.Linear = getattr(parent, attr)
        new_head: nn.Module = nn.Linear(old_head.in_features, num_classes)
        if self.dropout > 0:
            new_head = nn.Sequential(nn.Dropout(self.dropout), new_head)
        setattr(parent, attr, new_head)
        return model

    def _make_model(self) -> nn.Module:
        """The torchvision model with its default 1000-class head, random weights."""
        model: nn.Module = getattr(torchvision.models, self.arch)(weights=None)
        return model

    def encoder_state_dict(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        """Every parameter and buffer but the head's: smp's ``encoder_name`` encoder
        subclasses the same torchvision class, so the names are the same."""
        prefix = self.head + "."
        return OrderedDict(
            (k, v) for k, v in model.state_dict().items() if not k.startswith(prefix)
        )

    def _load_local_weights(self, model: nn.Module) -> None:
        assert self.weights is not None
        prefix = self.head + "."
        load_local_weights(model, self.weights, self.arch, skip=lambda k: k.startswith(prefix))


def _split(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = dotted.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


class ResNet18(TorchvisionBackbone):
    """torchvision ResNet-18 (11.2 M parameters); Grad-CAM hooks layer4."""

    arch = "resnet18"
    head = "fc"
    first_conv = "conv1"
    cam_layer = "layer4"
    encoder_name = "resnet18"


class ResNet50(TorchvisionBackbone):
    """torchvision ResNet-50 (23.5 M parameters); Grad-CAM hooks layer4."""

    arch = "resnet50"
    head = "fc"
    first_conv = "conv1"
    cam_layer = "layer4"
    encoder_name = "resnet50"


class _DenseNetOutOfPlace(torchvision.models.DenseNet):
    """torchvision's DenseNet with an out-of-place final ReLU.

    torchvision applies ``F.relu(features, inplace=True)`` to the output of
    ``features.norm5``, which overwrites the very tensor that a forward hook on the CAM
    layer has captured. Same parameters and state-dict names as torchvision's model.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.features(x))
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(features, (1, 1)), 1)
        return self.classifier(pooled)


def densenet121_model(num_classes: int = 1000) -> _DenseNetOutOfPlace:
    """torchvision's DenseNet-121 configuration with random weights (out-of-place ReLU)."""
    return _DenseNetOutOfPlace(
        growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, num_classes=num_classes
    )


class DenseNet121(TorchvisionBackbone):
    """torchvision DenseNet-121 (7.0 M parameters, CheXNet's); Grad-CAM hooks features.norm5."""

    arch = "densenet121"
    head = "classifier"
    first_conv = "features.conv0"
    cam_layer = "features.norm5"
    encoder_name = "densenet121"

    def _make_model(self) -> nn.Module:
        return densenet121_model()


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class TinyCNN:
    """Four small conv blocks and a linear head, for fast CPU runs; Grad-CAM hooks block4."""

    cam_layer = "features.block4"
    encoder_name: str | None = None

    def __init__(self, width: int = 16) -> None:
        """:param width: channels of the first block (doubled in blocks 2 and 3)."""
        if not isinstance(width, int) or width < 1:
            raise DollError(f"width must be a positive integer, got {width!r}")
        self.width = width

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        """Images ``[B, in_channels, H, W]`` -> logits ``[B, num_classes]``; H and W >= 8."""
        _check_sizes(num_classes, in_channels)
        w = self.width
        features = nn.Sequential(
            OrderedDict(
                block1=_conv_block(in_channels, w),
                pool1=nn.MaxPool2d(2),
                block2=_conv_block(w, 2 * w),
                pool2=nn.MaxPool2d(2),
                block3=_conv_block(2 * w, 4 * w),
                pool3=nn.MaxPool2d(2),
                block4=_conv_block(4 * w, 4 * w),
            )
        )
        return nn.Sequential(
            OrderedDict(
                features=features,
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                classifier=nn.Linear(4 * w, num_classes),
            )
        )

    def encoder_state_dict(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        raise PluginError("backbone 'tiny_cnn' has no segmentation encoder to take its weights")


BUILTIN_BACKBONES: dict[str, Any] = {
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "densenet121": DenseNet121,
    "tiny_cnn": TinyCNN,
}


@hookimpl
def doll_register_backbones(register: Any) -> None:
    from doll_plugins.xrv_backbones import XRVDenseNet

    for name, factory in {**BUILTIN_BACKBONES, "xrv_densenet": XRVDenseNet}.items():
        register(name, factory)
