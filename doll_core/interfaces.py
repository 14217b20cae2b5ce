"""Typed interfaces of the five plugin kinds.

These are :class:`typing.Protocol` classes: a plugin object conforms by having the named
methods and attributes, it does not need to inherit from anything. The registry checks
the required members (:data:`REQUIRED_MEMBERS`) of every object a factory returns.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch
    from torch import nn


class PluginKind(StrEnum):
    """The kinds of plugin, as users write them (``doll plugins list --kind seg_head``)."""

    BACKBONE = "backbone"
    EXPLAINER = "explainer"
    FUSION = "fusion"
    SEG_HEAD = "seg_head"
    DATASET = "dataset"

    @property
    def hook_name(self) -> str:
        """The hook that registers plugins of this kind, e.g. ``doll_register_backbones``."""
        return f"doll_register_{self.value}s"


@runtime_checkable
class Backbone(Protocol):
    """A classifier architecture.

    ``cam_layer`` is the dotted module name, inside the model that :meth:`build` returns,
    whose output CAM-type explainers (Grad-CAM) use: the last convolutional feature map.
    ``encoder_name`` is the seg-head encoder whose parameters have the same names and
    shapes as this backbone's feature extractor (``None`` when there is none).
    """

    cam_layer: str
    encoder_name: str | None

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        """Return a classifier: images ``[B, in_channels, H, W]`` -> logits ``[B, num_classes]``."""
        ...

    def encoder_state_dict(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        """The parameters and buffers of ``model`` that a seg encoder named
        ``encoder_name`` takes, keyed by that encoder's own names (the classifier head
        left out)."""
        ...


@runtime_checkable
class Explainer(Protocol):
    """An attribution method (see :func:`doll_core.hookspecs.doll_register_explainers`)."""

    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Attribute every target of every image.

        :param model: a classifier in eval mode, images -> logits ``[B, num_classes]``.
        :param images: ``float [B, C, H, W]``.
        :param targets: ``long [B, T]`` observation indices; ``-1`` = no target.
        :returns: ``float32 [B, T, H, W]`` on ``images.device``: raw attributions summed over
            the input channels; all zeros where the target is ``-1``.
        """
        ...


@runtime_checkable
class Fusion(Protocol):
    """Merges the maps of several classifiers into one."""

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """:param maps: ``[N_clf, B, T, H, W]``. :param weights: ``[N_clf]`` or ``None``.
        :returns: ``[B, T, H, W]``."""
        ...


@runtime_checkable
class SegHead(Protocol):
    """A segmentation architecture, encoder and decoder trained end to end."""

    def build(self, encoder: str, classes: int, in_channels: int) -> nn.Module:
        """Return a model ``[B, in_channels, H, W]`` -> logits ``[B, classes, H, W]`` whose
        encoder is the attribute ``encoder``."""
        ...


@runtime_checkable
class DatasetReader(Protocol):
    """A map-style dataset over one on-disk layout."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


#: The members the registry requires on the object that a plugin's factory returns.
REQUIRED_MEMBERS: dict[PluginKind, tuple[str, ...]] = {
    PluginKind.BACKBONE: ("build", "cam_layer"),
    PluginKind.EXPLAINER: ("attribute",),
    PluginKind.FUSION: ("fuse",),
    PluginKind.SEG_HEAD: ("build",),
    PluginKind.DATASET: ("__len__", "__getitem__"),
}
