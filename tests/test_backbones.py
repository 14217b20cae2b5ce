"""Built-in backbones: shapes, Grad-CAM layers, input-channel adaptation, local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from doll_core.errors import DollError, PluginError
from doll_core.registry import get_registry
from doll_plugins.backbones import adapt_first_conv

BACKBONES = ["resnet18", "resnet50", "densenet121", "tiny_cnn"]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_build_gives_logits_and_a_hookable_cam_layer(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    backbone = get_registry().create("backbone", name)
    model = backbone.build(num_classes=14, in_channels=in_channels).eval()
    seen: list[torch.Tensor] = []
    layer = model.get_submodule(backbone.cam_layer)
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, 64, 64))
    handle.remove()
    assert logits.shape == (2, 14)
    assert torch.isfinite(logits).all()
    (features,) = seen
    assert features.ndim == 4 and features.shape[0] == 2  # a spatial feature map


def test_tiny_cnn_is_small_and_width_configurable() -> None:
    registry = get_registry()
    small = registry.create("backbone", "tiny_cnn").build(14, 1)
    wide = registry.create("backbone", "tiny_cnn", width=32).build(14, 1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < 100_000 < count(wide)
    with pytest.raises(PluginError, match="no segmentation encoder"):
        registry.create("backbone", "tiny_cnn").encoder_state_dict(small)


def test_invalid_sizes_are_user_errors() -> None:
    backbone = get_registry().create("backbone", "resnet18")
    with pytest.raises(DollError, match="num_classes must be a positive integer, got 0"):
        backbone.build(num_classes=0, in_channels=1)
    with pytest.raises(DollError, match="in_channels"):
        backbone.build(num_classes=2, in_channels=1.5)


def test_grey_input_through_adapted_conv_equals_rgb_copy_through_original() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    grey = torch.randn(2, 1, 9, 9)
    torch.testing.assert_close(adapt_first_conv(conv, 1)(grey), conv(grey.repeat(1, 3, 1, 1)))


def test_many_channel_adaptation_keeps_the_response_to_a_constant_image() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 4, kernel_size=1, bias=False)
    five = adapt_first_conv(conv, 5)
    assert five.weight.shape == (4, 5, 1, 1)
    torch.testing.assert_close(five(torch.ones(1, 5, 2, 2)), conv(torch.ones(1, 3, 2, 2)))
    two = adapt_first_conv(conv, 2)
    torch.testing.assert_close(two(torch.ones(1, 2, 2, 2)), conv(torch.ones(1, 3, 2, 2)))
    assert adapt_first_conv(conv, 3) is conv


def test_local_weights_are_loaded_and_the_head_replaced(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)  # 1000-class head, RGB
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    model = get_registry().create("backbone", "resnet18", weights=str(path)).build(14, 3)
    torch.testing.assert_close(model.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert model.fc.out_features == 14
    grey = get_registry().create("backbone", "resnet18", weights=str(path)).build(14, 1)
    torch.testing.assert_close(grey.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))


def test_weights_of_another_architecture_or_a_missing_file_are_named(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "densenet.pt"
    torch.save(torchvision.models.densenet121(weights=None).state_dict(), path)
    registry = get_registry()
    with pytest.raises(DollError, match=r"densenet\.pt does not fit resnet18"):
        registry.create("backbone", "resnet18", weights=str(path)).build(14, 1)
    with pytest.raises(PluginError, match=r"weights file not found: .*nope\.pt"):
        registry.create("backbone", "resnet18", weights=str(tmp_path / "nope.pt"))


def test_densenet_matches_torchvision_and_leaves_the_cam_output_intact() -> None:
    import torchvision

    torch.manual_seed(4)
    backbone = get_registry().create("backbone", "densenet121")
    model = backbone.build(num_classes=5, in_channels=3).eval()
    reference = torchvision.models.densenet121(weights=None, num_classes=5).eval()
    reference.load_state_dict(model.state_dict())  # same parameter names
    images = torch.randn(2, 3, 64, 64)
    captured: list[torch.Tensor] = []
    layer = model.get_submodule(backbone.cam_layer)
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.clone()))
    layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images))
    handle.remove()
    assert (captured[0] < 0).any()  # BatchNorm output, before any ReLU
    assert torch.equal(captured[0], captured[1])  # not overwritten by a later in-place op
