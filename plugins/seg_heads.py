"""Built-in segmentation heads from segmentation-models-pytorch (smp).

Each builds the whole model, encoder and decoder, with ``encoder_weights=None``: DoLL never
downloads weights. The encoder is the model's ``encoder`` attribute, so a classifier
backbone of the same family can hand its trained weights to it
(:func:`doll_core.transfer.load_classifier_into_encoder`); the output layer is the
convolution at the start of smp's ``segmentation_head``
(:class:`doll_core.interfaces.SegHead`).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, ClassVar

import segmentation_models_pytorch as smp
from torch import nn

from doll_core import hookimpl
from doll_core.errors import DollError

#: Arguments that ``build`` sets itself and users may not pass as options.
_RESERVED = ("encoder_name", "encoder_weights", "in_channels", "classes")


class SmpSegHead:
    """Common code of the smp architectures; subclasses name the smp class."""

    architecture: ClassVar[type[nn.Module]]

    def __init__(self, **options: Any) -> None:
        """:param options: keyword arguments of the smp class (e.g. ``decoder_channels`` for
        Unet), checked here so that a typo fails before any work starts."""
        name = self.architecture.__name__
        if options.get("encoder_weights") is not None:
            raise DollError(
                f"{name}: encoder_weights must stay None; DoLL never downloads weights "
                "(pre-train on DoLL labels or load a local checkpoint instead)"
            )
        accepted = [
            p
            for p in inspect.signature(self.architecture).parameters
            if p not in _RESERVED and p != "kwargs"
        ]
        unknown = sorted(set(options) - set(accepted) - {"encoder_weights"})
        if unknown:
            raise DollError(
                f"{name} does not take option(s) {unknown}; it takes: {', '.join(accepted)}"
            )
        options.pop("encoder_weights", None)
        self.options = options

    def build(self, encoder: str, classes: int, in_channels: int) -> nn.Module:
        """Images ``[B, in_channels, H, W]`` -> logits ``[B, classes, H, W]`` (H and W
        divisible by the encoder's output stride, 32 for a depth-5 encoder)."""
        available = smp.encoders.get_encoder_names()
        if encoder not in available:
            close = difflib.get_close_matches(encoder, available, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DollError(f"unknown segmentation encoder {encoder!r}{hint}")
        for label, value in (("classes", classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DollError(f"{label} must be a positive integer, got {value!r}")
        return self.architecture(
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=classes,
            **self.options,
        )

    def output_layer(self, model: nn.Module) -> nn.Module:
        """smp's output convolution: the first module of ``model.segmentation_head``
        (the rest of it, upsampling and activation, has no parameters)."""
        return self._head(model)[0]

    def set_output_layer(self, model: nn.Module, layer: nn.Module) -> None:
        """Put ``layer`` first in ``model.segmentation_head``, where the output
        convolution was (same state-dict names, same parameter order)."""
        self._head(model)[0] = layer

    @staticmethod
    def _head(model: nn.Module) -> nn.Sequential:
        head = getattr(model, "segmentation_head", None)
        if not isinstance(head, nn.Sequential):
            raise DollError(
                f"{type(model).__name__} has no smp segmentation_head; it was not built by "
                "this seg head"
            )
        return head


class Unet(SmpSegHead):
    """U-Net: encoder-decoder with skip connections at every scale (smp.Unet)."""

    architecture = smp.Unet


class PSPNet(SmpSegHead):
    """Pyramid Scene Parsing network: pyramid pooling on a shallow encoder (smp.PSPNet)."""

    architecture = smp.PSPNet


class DeepLabV3Plus(SmpSegHead):
    """DeepLabV3+: atrous spatial pyramid pooling with a light decoder (smp.DeepLabV3Plus)."""

    architecture = smp.DeepLabV3Plus


class FPN(SmpSegHead):
    """Feature Pyramid Network decoder (smp.FPN)."""

    architecture = smp.FPN


BUILTIN_SEG_HEADS: dict[str, type[SmpSegHead]] = {
    "unet": Unet,
    "pspnet": PSPNet,
    "deeplabv3plus": DeepLabV3Plus,
    "fpn": FPN,
}


@hookimpl
def doll_register_seg_heads(register: Any) -> None:
    for name, factory in BUILTIN_SEG_HEADS.items():
        register(name, factory, smp_class=factory.architecture.__name__)
