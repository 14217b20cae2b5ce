"""A plugin of each of DoLL's six kinds, written from the documented contract alone: the
protocols of ``doll_core.interfaces`` and the plugin guide (docs/plugins.md). It imports
from DoLL only ``hookimpl`` and the public list of observations, leaves out the optional
members it can do without (no ``encoder_name``, no ``unavailable``, no ``label_arrays``,
no registration metadata; the readers give ``sample_id``, and the mask reader its
``classes``, which a split by file and the class names need), and reads its own file
layouts:

- ``tp_folder`` (classification): ``ROOT/images/NAME.png`` and ``ROOT/labels.json``,
  ``{"NAME.png": {"split": "train", "positive": ["Pneumonia"]}}``;
- ``tp_masks`` (segmentation): ``ROOT/images/NAME.png`` and ``ROOT/masks/NAME.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from doll_core import hookimpl
from doll_core.observations import OBSERVATIONS


def _read(path: Path, size: int | None, grayscale: bool) -> torch.Tensor:
    """An image file as float ``[C, H, W]`` in [0, 1]."""
    image = Image.open(path).convert("L")
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
    return pixels if grayscale else pixels.expand(3, -1, -1).clone()


class FolderClassification:
    """Radiographs in ``images/`` with the findings ``labels.json`` lists."""

    def __init__(self, root, *, split="train", size=64, grayscale=True, on_error="skip"):
        self.root, self.size, self.grayscale = Path(root), size, grayscale
        table = json.loads((self.root / "labels.json").read_text())
        self.names = sorted(name for name, row in table.items() if row["split"] == split)
        self.positive = {name: set(table[name]["positive"]) for name in self.names}

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        labels = torch.tensor([float(o in self.positive[name]) for o in OBSERVATIONS])
        return {
            "image": _read(self.root / "images" / name, self.size, self.grayscale),
            "labels": labels,
            "label_mask": torch.ones(len(OBSERVATIONS), dtype=torch.bool),
            "id": name,
        }

    def sample_id(self, index):
        return self.names[index]


class FolderMasks:
    """Images in ``images/`` and one binary mask each, of the same name, in ``masks/``."""

    classes = ("lung",)

    def __init__(self, root, *, size=64, grayscale=True, on_error="skip", split=None):
        self.root, self.size, self.grayscale = Path(root), size, grayscale
        self.names = sorted(p.name for p in (self.root / "images").glob("*.png"))

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        mask = _read(self.root / "masks" / name, self.size, True)
        return {
            "image": _read(self.root / "images" / name, self.size, self.grayscale),
            "mask": (mask > 0.5).float(),
            "id": name,
        }


class TwoLayerNet:
    """A two-convolution classifier."""

    cam_layer = "0.2"

    def build(self, num_classes, in_channels):
        return nn.Sequential(
            nn.Sequential(
                nn.Conv2d(in_channels, 8, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
            ),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, num_classes),
        )


class GradientTimesInput:
    """Gradient x input, summed over channels."""

    def attribute(self, model, images, targets):
        maps = torch.zeros(images.shape[0], targets.shape[1], *images.shape[2:])
        for slot in range(targets.shape[1]):
            rows = (targets[:, slot] >= 0).nonzero().flatten()
            if len(rows) == 0:
                continue
            x = images[rows].detach().clone().requires_grad_(True)
            logits = model(x)
            chosen = logits.gather(1, targets[rows, slot][:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, x)
            maps[rows, slot] = (grad * x).sum(1).detach().float().cpu()
        return maps.to(images.device)


class PixelMax:
    """The largest of the classifiers' maps, pixel by pixel."""

    def fuse(self, maps, weights=None):
        return maps.max(dim=0).values


class EncoderDecoder(nn.Module):
    def __init__(self, in_channels, classes):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.output = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return self.output(self.decoder(self.encoder(x)))


class SmallSegmenter:
    """A one-convolution encoder, a one-convolution decoder, a 1x1 output layer."""

    def build(self, encoder, classes, in_channels):
        return EncoderDecoder(in_channels, classes)

    def output_layer(self, model):
        return model.output

    def set_output_layer(self, model, layer):
        model.output = layer


class Spread:
    """The share of a map's pixels above half its maximum (lower: more concentrated)."""

    category = "complexity"
    higher_is_better = False
    needs = frozenset()

    def compute(self, batch):
        maps = batch.maps.abs()
        peak = maps.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)
        return (maps > 0.5 * peak).float().mean(dim=(2, 3))


@hookimpl
def doll_register_backbones(register):
    register("tp_net", TwoLayerNet)


@hookimpl
def doll_register_explainers(register):
    register("tp_gradient_x_input", GradientTimesInput)


@hookimpl
def doll_register_fusions(register):
    register("tp_max", PixelMax)


@hookimpl
def doll_register_seg_heads(register):
    register("tp_segmenter", SmallSegmenter)


@hookimpl
def doll_register_datasets(register):
    register("tp_folder", FolderClassification)
    register("tp_masks", FolderMasks)


@hookimpl
def doll_register_metrics(register):
    register("tp_spread", Spread)
