"""Every gradient explainer equals captum's per-target result in fp32 (relative error
<= 1e-4) on small random models, several targets per image and -1 padding."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from captum.attr import (
    DeepLift,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

import doll_core
from doll_core.attribution.engine import EngineOptions
from doll_core.errors import DollError, PluginError


class SmallNet(nn.Module):
    """Conv, BatchNorm (eval), ReLU and Softplus, pooling: what the engine must handle."""

    def __init__(self, in_channels: int, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.Softplus(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, classes))
        self.cam_layer = "features.5"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _model(in_channels: int) -> nn.Module:
    torch.manual_seed(in_channels)
    model = SmallNet(in_channels)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


TARGETS = torch.tensor([[0, 3, 4], [2, -1, -1], [-1, -1, -1], [1, 4, -1]])


def _reference(
    per_target: Callable[[torch.Tensor, int], torch.Tensor], images: torch.Tensor
) -> torch.Tensor:
    """captum one target at a time, summed over channels; zeros for -1."""
    out = torch.zeros(*TARGETS.shape, *images.shape[-2:])
    for b in range(TARGETS.shape[0]):
        for j in range(TARGETS.shape[1]):
            if TARGETS[b, j] >= 0:
                out[b, j] = per_target(images[b : b + 1], int(TARGETS[b, j]))[0].sum(0)
    return out


def _assert_close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    scale = reference.abs().max().clamp(min=1e-12)
    error = ((ours - reference).abs().max() / scale).item()
    assert error <= 1e-4, f"relative error {error:.2e}"


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients(in_channels: int, method: str) -> None:
    model = _model(in_channels)
    images = torch.rand(4, in_channels, 16, 16)
    ours = doll_core.explain(
        model,
        images,
        TARGETS,
        "integrated_gradients",
        n_steps=20,
        method=method,
        engine=EngineOptions(max_rows=24),
    )
    captum = IntegratedGradients(model)
    reference = _reference(
        lambda x, t: captum.attribute(x, target=t, n_steps=20, method=method), images
    )
    _assert_close(ours, reference)


def test_integrated_gradients_records_a_small_completeness_delta() -> None:
    model = _model(1)
    plugin = doll_core.get_registry().create("explainer", "integrated_gradients", n_steps=64)
    images = torch.rand(4, 1, 16, 16)
    maps = plugin.attribute(model, images, TARGETS)
    delta = plugin.last_delta
    assert delta.shape == TARGETS.shape and bool((delta[TARGETS < 0] == 0).all())
    # completeness: the attribution sums to the logit gain over the baseline, up to a delta
    gain = maps.sum(dim=(2, 3)) - delta
    assert gain.abs().max() > 0.001
    assert delta.abs().max() <= 0.01 * gain.abs().max()


def test_completeness_is_reported_over_calls_and_falls_with_more_steps() -> None:
    model = _model(1)
    images = torch.rand(4, 1, 16, 16)
    explained = TARGETS >= 0
    relative = {}
    for steps in (2, 64):
        plugin = doll_core.get_registry().create(
            "explainer", "integrated_gradients", n_steps=steps, method="riemann_left"
        )
        deltas, gains = [], []
        for half in (slice(0, 2), slice(2, 4)):  # two calls: the report sums over both
            maps = plugin.attribute(model, images[half], TARGETS[half])
            deltas.append(plugin.last_delta[explained[half]].abs())
            gains.append((maps.sum(dim=(2, 3)) - plugin.last_delta)[explained[half]].abs())
        report = plugin.performance_report()["completeness"]
        delta, gain = torch.cat(deltas), torch.cat(gains)
        assert report["maps"] == int(explained.sum()) == len(delta)
        assert report["mean_abs_delta"] == pytest.approx(float(delta.mean()), rel=1e-5)
        assert report["mean_abs_gain"] == pytest.approx(float(gain.mean()), rel=1e-4)
        relative[steps] = report["relative_delta"]
    assert relative[64] < relative[2] / 4
    quiet = doll_core.get_registry().create(
        "explainer", "integrated_gradients", n_steps=4, engine=EngineOptions(completeness=False)
    )
    quiet.attribute(model, images, TARGETS)
    assert quiet.last_delta is None and quiet.performance_report()["completeness"] is None


def test_completeness_every_measures_every_nth_call_per_model() -> None:
    models = [_model(1), _model(1)]
    images = torch.rand(2, 1, 16, 16)
    plugin = doll_core.get_registry().create(
        "explainer", "integrated_gradients", n_steps=4, engine=EngineOptions(completeness_every=3)
    )
    measured = []
    for call in range(7):
        for m, model in enumerate(models):  # label generation's order: a, b, a, b, ...
            plugin.last_delta = None
            plugin.attribute(model, images, TARGETS[:2])
            if plugin.last_delta is not None:
                measured.append((call, m))
    assert measured == [(c, m) for c in (0, 3, 6) for m in (0, 1)]
    explained = int((TARGETS[:2] >= 0).sum())
    assert plugin.performance_report()["completeness"]["maps"] == 6 * explained


@pytest.mark.parametrize("in_channels", [1, 3])
def test_saliency_and_input_x_gradient(in_channels: int) -> None:
    model = _model(in_channels)
    images = torch.rand(4, in_channels, 16, 16)
    saliency = Saliency(model)
    _assert_close(
        doll_core.explain(model, images, TARGETS, "saliency"),
        _reference(lambda x, t: saliency.attribute(x, target=t), images),
    )
    ixg = InputXGradient(model)
    _assert_close(
        doll_core.explain(
            model, images, TARGETS, "input_x_gradient", engine=EngineOptions(max_rows=3)
        ),
        _reference(lambda x, t: ixg.attribute(x, target=t), images),
    )


@pytest.mark.parametrize("in_channels", [1, 3])
def test_smoothgrad_with_a_fixed_noise_seed(in_channels: int) -> None:
    model = _model(in_channels)
    images = torch.rand(4, in_channels, 16, 16)
    ours = torch.zeros(*TARGETS.shape, 16, 16)
    reference = torch.zeros_like(ours)
    tunnel = NoiseTunnel(Saliency(model))
    for b in range(4):  # captum draws noise per call: compare image by image, same seed
        for j in range(3):
            if TARGETS[b, j] < 0:
                continue
            single = TARGETS[b : b + 1, j : j + 1]
            ours[b, j] = doll_core.explain(
                model, images[b : b + 1], single, "smoothgrad", n_samples=6, stdev=0.2, seed=7
            )[0, 0]
            torch.manual_seed(7)
            reference[b, j] = tunnel.attribute(
                images[b : b + 1],
                nt_type="smoothgrad",
                nt_samples=6,
                stdevs=0.2,
                target=int(TARGETS[b, j]),
            )[0].sum(0)
    _assert_close(ours, reference)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_gradcam_on_the_models_cam_layer(in_channels: int) -> None:
    model = _model(in_channels)
    images = torch.rand(4, in_channels, 16, 16)
    ours = doll_core.explain(model, images, TARGETS, "gradcam")
    captum = LayerGradCam(model, model.features[5])

    def one(x: torch.Tensor, t: int) -> torch.Tensor:
        cam = captum.attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(cam, (16, 16), interpolate_mode="bilinear")

    _assert_close(ours, _reference(one, images))


@pytest.mark.parametrize("in_channels", [1, 3])
def test_deeplift(in_channels: int) -> None:
    model = _model(in_channels)
    images = torch.rand(4, in_channels, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = doll_core.explain(model, images, TARGETS, "deeplift")
        captum = DeepLift(model)
        reference = _reference(lambda x, t: captum.attribute(x, target=t), images)
    _assert_close(ours, reference)


def test_deeplift_refuses_shared_activations() -> None:
    model = doll_core.get_registry().create("backbone", "resnet18").build(5, 1).eval()
    with pytest.raises(PluginError, match=r"deeplift: activation module\(s\) \['layer1.0.relu'"):
        doll_core.explain(model, torch.rand(1, 1, 32, 32), torch.tensor([[0]]), "deeplift")


@pytest.mark.parametrize("in_channels", [1, 3])
def test_occlusion(in_channels: int) -> None:
    model = _model(in_channels)
    images = torch.rand(4, in_channels, 16, 16)
    engine = EngineOptions(max_rows=5)
    ours = doll_core.explain(model, images, TARGETS, "occlusion", window=4, stride=2, engine=engine)
    captum = Occlusion(model)
    reference = _reference(
        lambda x, t: captum.attribute(
            x, sliding_window_shapes=(in_channels, 4, 4), strides=(in_channels, 2, 2), target=t
        ),
        images,
    )
    # captum gives each channel the full logit drop; the channel sum counts it C times
    _assert_close(ours * in_channels, reference)


def test_reduced_precision_comes_with_its_measured_error() -> None:
    model = _model(3)
    images = torch.rand(4, 3, 16, 16)
    plugin = doll_core.get_registry().create(
        "explainer", "integrated_gradients", n_steps=8, engine=EngineOptions(autocast="bf16")
    )
    with pytest.warns(RuntimeWarning, match="bf16 autocast: relative error .* against fp32"):
        maps = plugin.attribute(model, images, TARGETS)
    exact = doll_core.explain(model, images, TARGETS, "integrated_gradients", n_steps=8)
    error = float((maps[:1] - exact[:1]).abs().max() / exact[:1].abs().max())
    assert plugin.autocast_error == pytest.approx(error, rel=1e-6)
    assert plugin.autocast_error > 0
    assert plugin.last_delta is not None and plugin.last_delta.shape == TARGETS.shape
    with pytest.raises(DollError, match="autocast must be None, 'fp16' or 'bf16'"):
        doll_core.get_registry().create(
            "explainer", "saliency", engine=EngineOptions(autocast="fp8")
        )
