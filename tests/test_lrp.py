"""LRP: equals zennit's own per-target attributor; refuses DenseNet with a reason."""

from __future__ import annotations

import pytest
import torch
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

import doll_core
from doll_core.checkpoint import ClassifierMeta, build_classifier
from doll_core.errors import PluginError


def _classifier(backbone: str) -> torch.nn.Module:
    torch.manual_seed(0)
    meta = ClassifierMeta(
        backbone=backbone,
        backbone_params={},
        in_channels=1,
        image_size=32,
        mean=(0.5,),
        std=(0.25,),
    )
    model = build_classifier(meta)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model.train()
        model(torch.rand(8, 1, 32, 32))
    return model.eval()


@pytest.mark.parametrize(
    ("backbone", "canonizer"),
    [("tiny_cnn", SequentialMergeBatchNorm), ("resnet18", ResNetCanonizer)],
)
def test_lrp_matches_zennit_per_target(backbone: str, canonizer: type) -> None:
    model = _classifier(backbone)
    images = torch.rand(3, 1, 32, 32)
    targets = torch.tensor([[1, 4], [2, -1], [0, 13]])
    ours = doll_core.explain(model, images, targets, "lrp")
    normalised = (images - 0.5) / 0.25
    for b in range(3):
        for j in range(2):
            if targets[b, j] < 0:
                assert ours[b, j].abs().sum() == 0
                continue
            composite = EpsilonPlusFlat(epsilon=1e-6, canonizers=[canonizer()])
            with Gradient(model.net, composite) as attributor:
                _, relevance = attributor(
                    normalised[b : b + 1], torch.eye(14)[[int(targets[b, j])]]
                )
            reference = relevance[0].sum(0)
            error = (ours[b, j] - reference).abs().max() / reference.abs().max()
            assert error <= 1e-4


def test_lrp_refuses_densenet() -> None:
    model = _classifier("densenet121")
    with pytest.raises(PluginError, match="lrp: DenseNet is not supported: it applies BatchNorm"):
        doll_core.explain(model, torch.rand(1, 1, 32, 32), torch.tensor([[0]]), "lrp")
