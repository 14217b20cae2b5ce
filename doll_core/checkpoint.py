"""The classifier checkpoint: the one format every later stage reads.

A checkpoint is a ``torch.save`` dict (loaded with ``weights_only=True``, so opening one
runs no code) holding the format name and version, the backbone plugin and its
parameters, the input size and channels, the normalisation, the observation names, the
training config, the validation AUROC per observation and the state dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from doll_core._version import __version__
from doll_core.atomic import atomic_torch_save
from doll_core.errors import DollError
from doll_core.interfaces import optional_member
from doll_core.models import Classifier
from doll_core.observations import OBSERVATIONS
from doll_core.payloads import load_payload
from doll_core.registry import Registry, get_registry
from doll_core.state_dicts import describe_mismatch

CLASSIFIER_FORMAT = "doll-classifier"
CLASSIFIER_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClassifierMeta:
    """Everything about a trained classifier except its weights."""

    backbone: str
    backbone_params: dict[str, Any]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    observations: tuple[str, ...] = OBSERVATIONS
    #: observations the model has no output for (its backbone's ``unavailable``, e.g.
    #: torchxrayvision's lacks Support Devices): never trained on, scored or explained
    unavailable: tuple[str, ...] = ()
    training_config: dict[str, Any] = field(default_factory=dict)
    val_auroc: dict[str, float | None] = field(default_factory=dict)
    epoch: int = 0
    doll_version: str = __version__


def unavailable_outputs(
    backbone: str, params: Mapping[str, Any], registry: Registry | None = None
) -> tuple[str, ...]:
    """The observations the backbone plugin ``backbone`` with ``params`` has no output for
    (its ``unavailable``; none for most backbones): what a classifier's checkpoint records
    as ``ClassifierMeta.unavailable``."""
    return tuple(_backbone_member(backbone, params, "unavailable", registry))


def backbone_encoder(
    backbone: str, params: Mapping[str, Any], registry: Registry | None = None
) -> str | None:
    """The segmentation encoder whose weights the backbone plugin ``backbone`` with
    ``params`` fits (its ``encoder_name``), or ``None`` where it fits none."""
    name = _backbone_member(backbone, params, "encoder_name", registry)
    return str(name) if name is not None else None


def _backbone_member(
    backbone: str, params: Mapping[str, Any], member: str, registry: Registry | None
) -> Any:
    """The optional ``member`` of the backbone plugin ``backbone`` built with ``params``."""
    plugin = (registry or get_registry()).create("backbone", backbone, **params)
    return optional_member(plugin, "backbone", member)


def build_classifier(meta: ClassifierMeta, registry: Registry | None = None) -> Classifier:
    """A freshly initialised :class:`Classifier` of the architecture ``meta`` describes."""
    registry = registry or get_registry()
    backbone = registry.create("backbone", meta.backbone, **meta.backbone_params)
    net = backbone.build(num_classes=len(meta.observations), in_channels=meta.in_channels)
    return Classifier(net, meta.mean, meta.std, cam_layer=backbone.cam_layer)


def save_classifier(path: str | Path, model: Classifier, meta: ClassifierMeta) -> None:
    """Write a classifier checkpoint atomically."""
    module = getattr(model, "module", model)  # unwrap DDP
    payload = {
        "format": CLASSIFIER_FORMAT,
        "format_version": CLASSIFIER_FORMAT_VERSION,
        "meta": {
            **asdict(meta),
            "mean": list(meta.mean),
            "std": list(meta.std),
            "observations": list(meta.observations),
            "unavailable": list(meta.unavailable),
            "val_auroc": {
                k: (None if v is None or math.isnan(v) else float(v))
                for k, v in meta.val_auroc.items()
            },
        },
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    atomic_torch_save(payload, path)


def _read(path: Path) -> dict[str, Any]:
    return load_payload(
        path,
        file_format=CLASSIFIER_FORMAT,
        max_version=CLASSIFIER_FORMAT_VERSION,
        what="classifier checkpoint",
    )


def read_classifier_meta(path: str | Path) -> ClassifierMeta:
    """The metadata of a checkpoint, checked, without building the model."""
    payload = _read(Path(path))
    raw = dict(payload.get("meta") or {})
    try:
        raw["mean"] = tuple(raw["mean"])
        raw["std"] = tuple(raw["std"])
        raw["observations"] = tuple(raw["observations"])
        raw["unavailable"] = tuple(raw.get("unavailable") or ())
        meta = ClassifierMeta(**raw)
    except (KeyError, TypeError) as exc:
        raise DollError(f"{path}: checkpoint metadata is incomplete ({exc})") from None
    if meta.observations != OBSERVATIONS:
        raise DollError(
            f"{path} was trained on observations {list(meta.observations)}, "
            f"not on DoLL's {len(OBSERVATIONS)} CheXpert observations in CSV order"
        )
    return meta


def load_classifier(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    in_channels: int | None = None,
    image_size: int | None = None,
    registry: Registry | None = None,
) -> tuple[Classifier, ClassifierMeta]:
    """Build the classifier of a checkpoint, load its weights and put it in eval mode.

    :param in_channels: / :param image_size: what the caller will feed; a checkpoint
        trained otherwise is refused with a message that names both values.
    """
    path = Path(path)
    meta = read_classifier_meta(path)
    mismatches = [
        f"{name} is {have} in the checkpoint, {want} here"
        for name, have, want in (
            ("in_channels", meta.in_channels, in_channels),
            ("image_size", meta.image_size, image_size),
        )
        if want is not None and have != want
    ]
    if mismatches:
        raise DollError(f"{path} does not fit: " + "; ".join(mismatches))
    model = build_classifier(meta, registry)
    state = _read(path)["state_dict"]
    details = describe_mismatch(model.state_dict(), state)
    if details:
        raise DollError(
            f"{path}: weights do not fit backbone {meta.backbone!r} with "
            f"{meta.backbone_params}: {details}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta
