"""Hand a trained classifier's feature extractor to a segmentation model's encoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from doll_core.errors import DollError, PluginError
from doll_core.interfaces import optional_member
from doll_core.state_dicts import describe_mismatch

if TYPE_CHECKING:
    from torch import nn

    from doll_core.interfaces import Backbone


def load_classifier_into_encoder(
    seg_model: nn.Module,
    classifier: nn.Module,
    backbone: Backbone,
    *,
    encoder: str,
) -> None:
    """Copy ``classifier``'s parameters and buffers (all but its head) into
    ``seg_model.encoder``, in place.

    :param seg_model: a model built by a seg-head plugin with encoder name ``encoder``.
    :param classifier: a model built (and trained) by the ``backbone`` plugin.
    :param backbone: the backbone plugin object that built ``classifier``.
    :param encoder: the encoder name ``seg_model`` was built with.
    :raises DollError: when the backbone has no matching encoder, the names differ, or any
        parameter is missing, left over or of another shape; nothing is copied then.
    """
    fits = optional_member(backbone, "backbone", "encoder_name")
    if fits is None:
        raise DollError(
            f"backbone {type(backbone).__name__} has no segmentation encoder counterpart; "
            "its weights cannot initialise a segmentation model"
        )
    if fits != encoder:
        raise DollError(
            f"the classifier's weights fit encoder {fits!r}, but the segmentation model was "
            f"built with encoder {encoder!r}"
        )
    target = getattr(seg_model, "encoder", None)
    if target is None:
        raise PluginError(
            f"segmentation model {type(seg_model).__name__} has no 'encoder' attribute, "
            "which every seg-head plugin's model must expose"
        )
    source = dict(backbone.encoder_state_dict(classifier))
    details = describe_mismatch(target.state_dict(), source)
    if details:
        raise DollError(f"classifier weights do not fit encoder {encoder!r}: {details}")
    # Module.load_state_dict itself: some encoders override it with key remapping (and
    # without ``strict``); the names were checked above, so none is needed here.
    torch.nn.Module.load_state_dict(target, source, strict=True)
