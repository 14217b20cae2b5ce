"""torchxrayvision's DenseNet-121 as a DoLL backbone (``xrv_densenet``).

torchxrayvision (Cohen et al. 2022) ships DenseNet-121 classifiers trained on CheXpert,
NIH, MIMIC-CXR, PadChest, RSNA and all of them together. Their architecture is
torchvision's DenseNet-121 with one input channel and 18 outputs, so this plugin builds it
without torchxrayvision's code and loads a weights file a user downloaded, converted once
to a plain state dict (``doll convert-weights FILE.pt weights.pt --trusted``: the
published files are whole pickled models). Never a download.

Its input convention lives here: images are resized to 224² inside the model, and the
registry entry states the normalisation its weights expect, mean 0.5 and std 1/2048,
which turns DoLL's [0, 1] images into torchxrayvision's [-1024, 1024]
(:data:`XRV_MEAN`, :data:`XRV_STD`; a classifier with other values is refused). Its 18
outputs map to the 14 observations by :data:`XRV_TO_OBSERVATION`; No Finding and Support
Devices have no output, and a weight set that did not train an output (torchxrayvision
lists it as ``""``) has none either: those observations are the model's
``unavailable`` ones, whose logits are 0.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from doll_core.errors import DollError
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from doll_plugins.backbones import densenet121_model, load_local_weights, local_weights_file

#: torchxrayvision's 18 outputs, in its order (``xrv.datasets.default_pathologies``)
XRV_PATHOLOGIES = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
    "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
    "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity",
    "Enlarged Cardiomediastinum",
)  # fmt: skip
#: an output of torchxrayvision -> the observation it is (the others have none)
XRV_TO_OBSERVATION = {
    "Atelectasis": "Atelectasis",
    "Consolidation": "Consolidation",
    "Pneumothorax": "Pneumothorax",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pleural_Thickening": "Pleural Other",
    "Cardiomegaly": "Cardiomegaly",
    "Lung Lesion": "Lung Lesion",
    "Fracture": "Fracture",
    "Lung Opacity": "Lung Opacity",
    "Enlarged Cardiomediastinum": "Enlarged Cardiomediastinum",
}
#: the normalisation torchxrayvision's weights expect: (x - 0.5) * 2048 in [-1024, 1024]
XRV_MEAN, XRV_STD = (0.5,), (1 / 2048,)
#: the side torchxrayvision's DenseNets were trained at
XRV_SIZE = 224


def trained_outputs(outputs: str) -> tuple[str, ...]:
    """The 18 output names of a torchxrayvision weight set (``""`` for one it did not
    train): ``all`` is every output; another name (``nih``, ``pc``, ``chex``, ``mimic_nb``,
    ``mimic_ch``, ``rsna``, or ``densenet121-res224-nih`` ...) is read from the installed
    torchxrayvision's table.

    :raises DollError: for an unknown name, or a name other than ``all`` without
        torchxrayvision installed.
    """
    if outputs == "all":
        return XRV_PATHOLOGIES
    try:
        import torchxrayvision
    except ImportError:
        raise DollError(
            f"xrv_densenet outputs = {outputs!r} reads torchxrayvision's table of weight sets; "
            "pip install 'doll[xrv]' (or use outputs = 'all')"
        ) from None
    table = torchxrayvision.models.model_urls
    entry = table.get(outputs) or table.get(f"densenet121-res224-{outputs}")
    labels = entry.get("labels") if isinstance(entry, Mapping) else None
    if not isinstance(labels, list) or len(labels) != len(XRV_PATHOLOGIES):
        names = sorted(k for k, v in table.items() if k.startswith("densenet121"))
        raise DollError(f"xrv_densenet: no DenseNet weight set {outputs!r}; known: {names}")
    return tuple(str(label) for label in labels)


class XRVNet(nn.Module):
    """Images ``[B, 1, H, W]`` (normalised by :data:`XRV_MEAN`, :data:`XRV_STD`) ->
    logits ``[B, 14]``: resized to 224², torchxrayvision's DenseNet, its outputs picked
    per observation (0 where there is none)."""

    def __init__(self, densenet: nn.Module, index: torch.Tensor) -> None:
        super().__init__()
        self.densenet = densenet
        #: ``long [14]``: the output of each observation, -1 for none
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (XRV_SIZE, XRV_SIZE):
            x = functional.interpolate(x, size=(XRV_SIZE, XRV_SIZE), mode="bilinear",
                                       align_corners=False)  # fmt: skip
        logits = self.densenet(x)  # [B, 18]
        index: torch.Tensor = self.index  # type: ignore[assignment]
        return logits[:, index.clamp(min=0)] * (index >= 0).to(logits.dtype)


class XRVDenseNet:
    """torchxrayvision's DenseNet-121 (grey, 224², 18 outputs, 7.0 M parameters)."""

    cam_layer = "densenet.features.norm5"
    encoder_name = "densenet121"
    input_mean, input_std = XRV_MEAN, XRV_STD

    def __init__(self, weights: str | Path | None = None, outputs: str = "all") -> None:
        """:param weights: a plain state dict of torchxrayvision's DenseNet (converted
            once with ``doll convert-weights FILE --trusted``); ``None``: random weights.
        :param outputs: the weight set, for which of its outputs were trained (see
            :func:`trained_outputs`)."""
        self.weights = local_weights_file(weights)
        trained = trained_outputs(outputs)
        position = {name: k for k, name in enumerate(XRV_PATHOLOGIES) if trained[k]}
        by_observation = {obs: position.get(xrv) for xrv, obs in XRV_TO_OBSERVATION.items()}
        self.index = torch.tensor(
            [p if (p := by_observation.get(name)) is not None else -1 for name in OBSERVATIONS]
        )
        #: observations this model has no output for: never a target
        self.unavailable = tuple(n for n, k in zip(OBSERVATIONS, self.index, strict=True) if k < 0)

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        """The model for DoLL's 14 observations on grey images."""
        if num_classes != NUM_OBSERVATIONS or in_channels != 1:
            raise DollError(
                f"xrv_densenet classifies grey images into the {NUM_OBSERVATIONS} "
                f"observations (got {num_classes} classes, {in_channels} channels)"
            )
        densenet = densenet121_model(num_classes=len(XRV_PATHOLOGIES))
        densenet.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if self.weights is not None:  # torchxrayvision's files may keep their op_threshs
            load_local_weights(densenet, self.weights, "torchxrayvision's DenseNet-121",
                               skip=lambda k: k == "op_threshs")  # fmt: skip
        return XRVNet(densenet, self.index.clone())

    def encoder_state_dict(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        """The DenseNet's feature extractor, named as smp's ``densenet121`` encoder
        (torchvision's names): everything but the 18-output head."""
        return OrderedDict(
            (k[len("densenet.") :], v)
            for k, v in model.state_dict().items()
            if k.startswith("densenet.") and not k.startswith("densenet.classifier.")
        )
