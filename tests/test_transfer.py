"""A trained classifier's weights initialise a segmentation encoder of the same family."""

from __future__ import annotations

import pytest
import torch

from doll_core.errors import DollError
from doll_core.registry import get_registry
from doll_core.transfer import load_classifier_into_encoder


def _trained_looking_classifier(name: str) -> tuple[object, torch.nn.Module]:
    """A classifier whose weights and BN statistics differ from any fresh initialisation."""
    torch.manual_seed(0)
    backbone = get_registry().create("backbone", name)
    classifier = backbone.build(num_classes=14, in_channels=1)
    with torch.no_grad():
        for parameter in classifier.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
        classifier.train()
        classifier(torch.randn(4, 1, 64, 64))  # moves BatchNorm running statistics
    return backbone, classifier.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121"])
def test_unet_encoder_features_equal_the_classifier_features(name: str) -> None:
    backbone, classifier = _trained_looking_classifier(name)
    seg = get_registry().create("seg_head", "unet").build(name, classes=3, in_channels=1).eval()
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        before = seg.encoder(images)[-1]
    load_classifier_into_encoder(seg, classifier, backbone, encoder=name)

    captured: list[torch.Tensor] = []
    layer = classifier.get_submodule(backbone.cam_layer)
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        classifier(images)
        after = seg.encoder(images)[-1]
    handle.remove()
    assert torch.equal(after, captured[0])  # bit-identical deepest features
    assert not torch.allclose(before, after)  # and it was not so before the transfer
    for key, value in seg.encoder.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[key]), key


def test_wrong_family_or_no_encoder_is_a_clear_error() -> None:
    backbone, classifier = _trained_looking_classifier("resnet18")
    seg34 = get_registry().create("seg_head", "unet").build("resnet34", classes=2, in_channels=1)
    with pytest.raises(DollError, match=r"fit encoder 'resnet18'.*built with encoder 'resnet34'"):
        load_classifier_into_encoder(seg34, classifier, backbone, encoder="resnet34")

    seg18 = get_registry().create("seg_head", "unet").build("resnet18", classes=2, in_channels=3)
    with pytest.raises(
        DollError, match=r"do not fit encoder 'resnet18': shape differs: conv1\.weight"
    ):
        load_classifier_into_encoder(seg18, classifier, backbone, encoder="resnet18")

    tiny = get_registry().create("backbone", "tiny_cnn")
    with pytest.raises(DollError, match="TinyCNN has no segmentation encoder counterpart"):
        load_classifier_into_encoder(seg18, tiny.build(14, 1), tiny, encoder="resnet18")
