"""Built-in segmentation heads (smp): whole models, no downloads, clear option errors."""

from __future__ import annotations

import pytest
import torch

from doll_core.errors import DollError, PluginError
from doll_core.registry import get_registry

HEADS = ["unet", "pspnet", "deeplabv3plus", "fpn"]


@pytest.mark.parametrize("name", HEADS)
def test_each_head_builds_a_whole_model_with_an_encoder(name: str) -> None:
    torch.manual_seed(0)
    model = get_registry().create("seg_head", name).build("resnet18", classes=3, in_channels=1)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 3, 64, 64)
    assert isinstance(model.encoder, torch.nn.Module)
    assert model.encoder.state_dict()["conv1.weight"].shape == (64, 1, 7, 7)


def test_options_reach_the_smp_model() -> None:
    model = (
        get_registry()
        .create("seg_head", "unet", decoder_channels=(32, 16, 8, 8, 4))
        .build("resnet18", classes=2, in_channels=1)
    )
    assert model.segmentation_head[0].in_channels == 4


def test_downloads_are_refused_and_typos_named() -> None:
    registry = get_registry()
    with pytest.raises(PluginError, match="encoder_weights must stay None"):
        registry.create("seg_head", "unet", encoder_weights="imagenet")
    with pytest.raises(PluginError, match=r"Unet does not take option\(s\) \['decoder_chanels'\]"):
        registry.create("seg_head", "unet", decoder_chanels=(1,))
    with pytest.raises(DollError, match="unknown segmentation encoder 'resnet81'; did you mean"):
        registry.create("seg_head", "fpn").build("resnet81", classes=2, in_channels=1)
