"""The seg-head and fusion contracts of ``doll_core.interfaces``, as a third party reads
them: a seg head that is not smp pre-trains and fine-tunes, a fusion that uses its
per-map weights goes through the core's fusion path, and a seg head that lacks what
fine-tuning needs is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional

from doll_core import hookimpl
from doll_core.checkpoint import load_classifier, read_classifier_meta
from doll_core.configuration import parse_config
from doll_core.errors import DollError, PluginError
from doll_core.labels.combine import fuse_stores
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.fusion import fuse_maps
from doll_core.labels.generate import generate_labels
from doll_core.labels.store import LabelStore
from doll_core.observations import OBSERVATIONS
from doll_core.registry import Registry
from doll_core.segmentation.config import FinetuneConfig, PretrainConfig
from doll_core.segmentation.finetune import finetune
from doll_core.segmentation.models import (
    ResidualAdapter,
    SegmenterMeta,
    build_segmenter,
    load_segmenter,
)
from doll_core.segmentation.pretrain import pretrain
from doll_core.transfer import load_classifier_into_encoder

# --------------------------------------------------------------------------- a seg head


class ResNetTrunk(nn.Module):
    """torchvision's ResNet-18 without its classifier, returning the four stages'
    features ``[B, 64|128|256|512, H/4 .. H/32, W/4 .. W/32]``. Its parameter names are the
    classifier's, so the ``resnet18`` backbone's ``encoder_state_dict`` loads into it."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


class TinyFPN(nn.Module):
    """Hand-written encoder-decoder: lateral 1x1 convolutions summed top-down (an FPN in
    a few lines), one output convolution at 1/4 scale, bilinear upsampling to the input."""

    def __init__(self, in_channels: int, classes: int, width: int) -> None:
        super().__init__()
        self.encoder = ResNetTrunk(in_channels)
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (64, 128, 256, 512))
        self.smooth = nn.Conv2d(width, width, 3, padding=1)
        self.output = nn.Conv2d(width, classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)
        top = self.lateral[-1](features[-1])
        for lateral, feature in zip(self.lateral[-2::-1], features[-2::-1], strict=True):
            top = lateral(feature) + functional.interpolate(top, size=feature.shape[-2:])
        logits = self.output(torch.relu(self.smooth(top)))
        return functional.interpolate(
            logits, size=images.shape[-2:], mode="bilinear", align_corners=False
        )


class TinyFPNHead:
    """A seg head written from doll_core.interfaces.SegHead alone (no smp)."""

    def __init__(self, width: int = 8) -> None:
        self.width = width

    def build(self, encoder: str, classes: int, in_channels: int) -> nn.Module:
        if encoder != "resnet18":
            raise DollError(f"TinyFPN has only the resnet18 encoder, not {encoder!r}")
        return TinyFPN(in_channels, classes, self.width)

    def output_layer(self, model: nn.Module) -> nn.Module:
        return model.get_submodule("output")

    def set_output_layer(self, model: nn.Module, layer: nn.Module) -> None:
        model.output = layer


class LegacyHead:
    """A seg head of the old contract: only ``build``."""

    def build(self, encoder: str, classes: int, in_channels: int) -> nn.Module:
        return TinyFPN(in_channels, classes, 4)


class PointsElsewhere(TinyFPNHead):
    """Names a decoder layer as the output layer."""

    def output_layer(self, model: nn.Module) -> nn.Module:
        return model.get_submodule("lateral")


class ForgetsTheLayer(TinyFPNHead):
    """Does not put the new layer in place."""

    def set_output_layer(self, model: nn.Module, layer: nn.Module) -> None:
        pass


class SegHeads:
    @hookimpl
    def doll_register_seg_heads(self, register: Any) -> None:
        register("tiny_fpn", TinyFPNHead)
        register("legacy", LegacyHead)
        register("points_elsewhere", PointsElsewhere)
        register("forgets_the_layer", ForgetsTheLayer)


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The installed plugins, and the seg heads above as a local plugin."""
    registry = Registry.from_environment()
    registry.add_plugin(SegHeads(), name="third-party-seg-heads")
    assert registry.failures == []
    return registry


def _meta(head: str, classes: int = 3) -> SegmenterMeta:
    return SegmenterMeta(
        head=head,
        head_params={},
        encoder="resnet18",
        classes=tuple(f"c{i}" for i in range(classes)),
        in_channels=1,
        image_size=32,
        mean=(0.5,),
        std=(0.25,),
    )


def test_the_classifier_loads_into_the_hand_written_encoder(
    registry: Registry, resnet_checkpoint: Path
) -> None:
    model = build_segmenter(_meta("tiny_fpn"), registry)
    classifier, _ = load_classifier(resnet_checkpoint, registry=registry)
    backbone = registry.create("backbone", "resnet18")
    load_classifier_into_encoder(model.net, classifier.net, backbone, encoder="resnet18")
    for key, value in classifier.net.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.encoder.state_dict()[key], value), key
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    assert model.output_conv() is model.net.output
    assert [id(p) for p in model.head_parameters()] == [
        id(p) for p in model.net.output.parameters()
    ]


@pytest.fixture(scope="module")
def tiny_pretrained(
    registry: Registry,
    small_label_store: Path,
    resnet_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """DoLL pre-training of the hand-written model: two steps from the classifier."""
    values = {
        "labels": str(small_label_store),
        "encoder_from": str(resnet_checkpoint),
        "head": "tiny_fpn",
        "head_params": {"width": 8},
        "image_size": 32,
        "epochs": 1,
        "max_steps_per_epoch": 2,
        "batch_size": 4,
        "num_workers": 0,
        "device": "cpu",
        "seed": 3,
    }
    out = tmp_path_factory.mktemp("tiny-pretrain") / "run"
    trainer = pretrain(parse_config(PretrainConfig, values), out, registry=registry)
    assert trainer.history and trainer.history[-1]["val_images"] > 0
    return out / "best.pt"


def test_pretraining_the_hand_written_model(
    registry: Registry, tiny_pretrained: Path, resnet_checkpoint: Path
) -> None:
    model, meta = load_segmenter(tiny_pretrained, registry)
    assert isinstance(model.seg_head, TinyFPNHead) and model.seg_head.width == 8
    assert meta.head == "tiny_fpn" and meta.classes == OBSERVATIONS
    assert model.output_conv().out_channels == len(OBSERVATIONS)
    classifier, _ = load_classifier(resnet_checkpoint, registry=registry)
    trained = model.encoder.state_dict()
    moved = [
        k for k, v in classifier.net.state_dict().items() if k in trained and k.endswith("weight")
    ]
    assert moved and any(not torch.equal(trained[k], classifier.net.state_dict()[k]) for k in moved)


@pytest.mark.parametrize(
    ("mode", "adapter"), [("full", False), ("full", True), ("adapter_only", True)]
)
def test_finetuning_the_hand_written_model(
    mode: str,
    adapter: bool,
    registry: Registry,
    tiny_pretrained: Path,
    small_phantom: Path,
    tmp_path: Path,
) -> None:
    values = {
        "data": str(small_phantom / "organs"),
        "init": "doll",
        "init_path": str(tiny_pretrained),
        "head": "tiny_fpn",
        "mode": mode,
        "adapter_blocks": adapter,
        "image_size": 32,
        "epochs": 1,
        "eval_interval": 2,
        "batch_size": 2,
        "lr": 0.01,
        "num_workers": 0,
        "device": "cpu",
        "seed": 4,
    }
    result = finetune(parse_config(FinetuneConfig, values), tmp_path, registry=registry)
    assert result["init"]["init"] == "doll" and "miou" in result["test"]
    tuned, meta = load_segmenter(tmp_path / "best.pt", registry)
    assert isinstance(tuned.seg_head, TinyFPNHead) and meta.adapter_blocks is adapter
    assert tuned.output_conv().out_channels == 3 and meta.head == "tiny_fpn"
    layer = tuned.output_layer()
    assert isinstance(layer[0], ResidualAdapter) if adapter else layer is tuned.output_conv()

    start, _ = load_segmenter(tiny_pretrained, registry)
    start.replace_output(3, adapter=adapter, seed=4)  # what fine-tuning started from
    before, after = start.state_dict(), tuned.state_dict()
    assert list(before) == list(after)
    head = [k for k in after if k.startswith("net.output.")]
    assert ("net.output.0.down.weight" in head) is adapter
    assert any(not torch.equal(after[k], before[k]) for k in head)  # the new layer trained
    body = [k for k in after if not k.startswith("net.output.")]
    unchanged = [k for k in body if torch.equal(after[k], before[k])]
    if mode == "adapter_only":
        assert unchanged == body  # encoder and decoder frozen, BatchNorm statistics too
    else:
        assert len(unchanged) < len(body)


def test_a_seg_head_without_the_output_layer_members_is_refused_by_name(
    registry: Registry,
) -> None:
    with pytest.raises(
        PluginError,
        match=r"seg_head 'legacy' \(from distribution '<local>'\) returned a LegacyHead "
        r"without 'output_layer', 'set_output_layer', which every seg_head must have "
        r"\(see doll_core\.interfaces\.SegHead\)",
    ):
        registry.create("seg_head", "legacy")
    with pytest.raises(PluginError, match="'legacy'"):
        build_segmenter(_meta("legacy"), registry)


def test_a_seg_head_that_breaks_the_output_layer_contract_is_named(registry: Registry) -> None:
    with pytest.raises(
        PluginError,
        match=r"seg head 'points_elsewhere': output_layer\(model\) returned a ModuleList",
    ):
        build_segmenter(_meta("points_elsewhere"), registry)
    model = build_segmenter(_meta("forgets_the_layer"), registry)
    with pytest.raises(PluginError, match=r"seg head 'forgets_the_layer': after set_output_layer"):
        model.replace_output(2)


# --------------------------------------------------------------------------- a fusion


class WeightedMax:
    """Pixel-wise maximum of the maps, each scaled by its own weight."""

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is None:
            raise DollError("weighted_max needs weights")
        return (weights[..., None, None] * maps).amax(dim=0)  # [N, B, T, 1, 1] * [N, B, T, H, W]


class Fusions:
    @hookimpl
    def doll_register_fusions(self, register: Any) -> None:
        register("weighted_max", WeightedMax)


def test_a_fusion_gets_one_weight_per_classifier_and_map() -> None:
    registry = Registry()
    registry.add_plugin(Fusions(), name="third-party-fusions")
    plugin = registry.create("fusion", "weighted_max")
    # two classifiers, one image, two targets, 1 x 2 pixels
    maps = torch.tensor([[[[[0.2, 1.0]], [[0.6, 0.4]]]], [[[[0.8, 0.5]], [[0.3, 1.0]]]]])
    weights = torch.tensor([[[0.5, 1.0]], [[1.0, 0.25]]])  # [N_clf=2, B=1, T=2]
    fused = fuse_maps(plugin, "weighted_max", maps, weights)
    # target 0: max(0.5 * [0.2, 1.0], 1.0 * [0.8, 0.5]) = [0.8, 0.5]
    # target 1: max(1.0 * [0.6, 0.4], 0.25 * [0.3, 1.0]) = [0.6, 0.4]
    torch.testing.assert_close(fused, torch.tensor([[[[0.8, 0.5]], [[0.6, 0.4]]]]))
    for bad, message in [
        (weights.double(), r"weights must be torch\.float32 on cpu like the maps"),
        (weights * 2, r"weights must be finite and in \[0, 1\]"),
        (weights[:, :, :1], r"weights must be \[N_clf, B, T\] = \[2, 1, 2\]"),
    ]:
        with pytest.raises(DollError, match=message):
            fuse_maps(plugin, "weighted_max", maps, bad)
    with pytest.raises(DollError, match=r"maps must be torch\.float32, got torch\.float64"):
        fuse_maps(plugin, "weighted_max", maps.double(), weights)


def test_a_weighted_fusion_through_fuse_stores_matches_a_hand_computation(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    stores = []
    for index, checkpoint in enumerate(tiny_checkpoints):
        values = {
            "data": str(small_phantom),
            "classifiers": [str(checkpoint)],
            "explainer": "saliency",
            "targets": "all",
            "label_size": 8,
            "limit": 6,
            "shard_size": 4,
            "device": "cpu",
        }
        stores.append(tmp_path / f"store{index}")
        generate_labels(parse_config(LabelGenerationConfig, values), stores[-1])
    registry = Registry.from_environment()
    registry.add_plugin(Fusions(), name="third-party-fusions")
    fuse_stores(stores, "weighted_max", tmp_path / "fused", registry=registry)

    aurocs = [read_classifier_meta(path).val_auroc for path in tiny_checkpoints]
    fused, sources = LabelStore(tmp_path / "fused"), [LabelStore(s) for s in stores]
    assert fused.ids == sources[0].ids and len(fused.ids) == 6
    distinct = set()
    for image_id in fused.ids:
        observations, maps = fused.labels(image_id)
        inputs = [source.labels(image_id) for source in sources]
        assert all(got == observations for got, _ in inputs)
        for slot, observation in enumerate(observations):
            name = OBSERVATIONS[observation]
            scaled = []
            for auroc, (_, source_maps) in zip(aurocs, inputs, strict=True):
                weight = auroc.get(name)
                weight = 0.5 if weight is None else weight
                distinct.add(round(weight, 6))
                scaled.append(
                    torch.tensor(weight, dtype=torch.float32) * (source_maps[slot].float() / 255)
                )
            expected = torch.round(torch.stack(scaled).amax(dim=0) * 255).to(torch.uint8)
            assert torch.equal(maps[slot], expected), (image_id, name)
    assert len(distinct) > 2  # the weights really differ from map to map
