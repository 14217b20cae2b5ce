"""The built-in metrics against Quantus 0.6 (a test-only dependency), on the same tiny
models, inputs and maps. Each test states its tolerance; the deliberate differences
between DoLL's definitions and Quantus' are listed in docs/explainer-evaluation.md, and
each test here sets Quantus' options so that the two compute the same quantity.

The maps are continuous random values: Quantus ranks with numpy's unstable ``argsort``,
so tied values would be ordered differently by the two.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus", reason="Quantus is a test-only dependency (.[dev])")

from doll_core.metrics.base import MetricBatch, run_metric  # noqa: E402
from doll_core.metrics.imputation import linear_imputation  # noqa: E402
from doll_core.metrics.similarity import ssim  # noqa: E402
from doll_core.registry import get_registry  # noqa: E402
from doll_plugins.metrics.faithfulness import correlation_of_subsets  # noqa: E402

SIZE = 8
#: float32 forward passes on both sides: the curves agree to this
FORWARD_TOLERANCE = 1e-5
#: Quantus' options that make it compute the raw quantity DoLL computes
PLAIN = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False}


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def metric(name: str, **params: Any) -> Any:
    return get_registry().create("metric", name, **params)


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
        )
        self.head = nn.Linear(4 * SIZE * SIZE, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(images)).flatten(1))


def data(count: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images ``[N, 1, 8, 8]``, classes ``[N]``, continuous maps ``[N, 8, 8]``."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, SIZE, SIZE, generator=generator)
    classes = torch.arange(count) % 3
    maps = torch.randn(count, SIZE, SIZE, generator=generator)
    return images, classes, maps


def one_target_batch(model: nn.Module, images: Any, classes: Any, maps: Any) -> MetricBatch:
    return MetricBatch(maps[:, None], classes[:, None], images=images, model=model.eval())


def quantus_call(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> dict[str, Any]:
    return {
        "model": model.eval(),
        "x_batch": images.numpy(),
        "y_batch": classes.numpy(),
        "softmax": False,
        "device": "cpu",
    }


# ------------------------------------------------------------------------ faithfulness
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_deletion_curve_equals_region_perturbation(order: str) -> None:
    model = SmallCNN()
    images, classes, maps = data()
    batch = one_target_batch(model, images, classes, maps)
    patches = (SIZE // 2) ** 2
    ours = metric("deletion", patch=2, steps=patches, baseline="zeros", output="logit")
    curves = ours.curves(batch, order=order, insertion=False)[:, 0]  # [N, 17]
    theirs = quantus.RegionPerturbation(
        patch_size=2, regions_evaluation=patches, order=order, perturb_baseline=0.0, **PLAIN
    )(a_batch=maps[:, None].numpy(), **quantus_call(model, images, classes))
    drops = torch.tensor(np.stack(theirs), dtype=torch.float64)  # y0 - y_k, k = 1 … 16
    assert torch.allclose(curves[:, :1] - curves[:, 1:], drops, atol=FORWARD_TOLERANCE)


def test_deletion_of_single_pixels_equals_pixel_flipping_and_its_area_is_rescaled() -> None:
    model = SmallCNN()
    images, classes, maps = data()
    batch = one_target_batch(model, images, classes, maps)
    params = {"patch": 1, "steps": SIZE * SIZE, "baseline": "zeros", "output": "logit"}
    curves = metric("deletion", **params).curves(batch, order="morf", insertion=False)[:, 0]
    theirs = quantus.PixelFlipping(features_in_step=1, perturb_baseline=0.0, **PLAIN)(
        a_batch=maps[:, None].numpy(), **quantus_call(model, images, classes)
    )
    flipped = torch.tensor(np.asarray(theirs), dtype=torch.float64)
    # Quantus' curve leaves out the unperturbed point; DoLL's starts with it
    assert torch.allclose(curves[:, 1:], flipped, atol=FORWARD_TOLERANCE)
    # deliberate difference: DoLL's area spans [0, 1] (unit spacing / steps) and includes
    # the unperturbed point; Quantus' np.trapz(dx=1) covers its own points only
    area = run_metric(metric("deletion", **params), "deletion", batch).values[:, 0]
    with_first = np.concatenate([curves[:, :1].numpy(), flipped.numpy()], axis=1)
    assert torch.allclose(
        area,
        torch.from_numpy(np.trapezoid(with_first, dx=1.0, axis=1)) / (SIZE * SIZE),
        atol=FORWARD_TOLERANCE,
    )


def test_linear_imputation_equals_quantus_noisy_linear_imputation_without_noise() -> None:
    from quantus.functions.perturb_func import noisy_linear_imputation

    generator = torch.Generator().manual_seed(4)
    for count in (5, 20, 45):
        image = torch.rand(1, 1, SIZE, SIZE, generator=generator)
        removed_index = torch.randperm(SIZE * SIZE, generator=generator)[:count]
        removed = torch.zeros(SIZE * SIZE, dtype=torch.bool)
        removed[removed_index] = True
        ours = linear_imputation(image, removed.view(1, 1, SIZE, SIZE), tolerance=1e-12)
        theirs = noisy_linear_imputation(
            image[0].double().numpy(), indices=removed_index.numpy(), noise=0.0
        )
        assert torch.allclose(ours[0], torch.from_numpy(theirs), atol=1e-8)


def test_road_removes_what_quantus_removes_and_reads_the_output_of_its_imputation() -> None:
    from quantus.functions.perturb_func import noisy_linear_imputation

    model = SmallCNN().eval()
    images, classes, maps = data()
    fractions = (0.1, 0.5, 0.9)
    road = metric("road", fractions=fractions, noise=0.0, output="logit")
    curves = road.curves(one_target_batch(model, images, classes, maps))[:, 0]  # [N, 3]
    for i in range(images.shape[0]):
        order = np.argsort(-maps[i].flatten().numpy())
        for j, fraction in enumerate(fractions):
            removed = order[: int(SIZE * SIZE * fraction * 100 / 100)]  # Quantus' int(a_size*p/100)
            filled = noisy_linear_imputation(images[i].numpy(), indices=removed, noise=0.0)
            with torch.no_grad():
                logit = model(torch.from_numpy(filled)[None].float())[0, classes[i]]
            assert float(curves[i, j]) == pytest.approx(float(logit), abs=FORWARD_TOLERANCE)


def test_faithfulness_correlation_equals_quantus_with_the_same_subsets() -> None:
    model = SmallCNN().eval()
    images, classes, maps = data()
    runs, subset, count = 12, 6, images.shape[0]
    # Quantus' draws, in its order: per run, one subset per sample (with a numeric
    # baseline it draws nothing else)
    np.random.seed(7)
    subsets = np.zeros((count, runs, subset), dtype=np.int64)
    for run in range(runs):
        for i in range(count):
            subsets[i, run] = np.random.choice(SIZE * SIZE, subset, replace=False)
    np.random.seed(7)
    theirs = quantus.FaithfulnessCorrelation(
        nr_runs=runs, subset_size=subset, perturb_baseline=0.0, return_aggregate=False, **PLAIN
    )(a_batch=maps[:, None].numpy(), **quantus_call(model, images, classes))
    ours = correlation_of_subsets(
        model,
        images,
        maps,
        classes,
        torch.zeros_like(images),
        torch.from_numpy(subsets),
        output="logit",
        max_rows=16,
    )
    assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float64), atol=1e-5)


# ------------------------------------------------------------------------ randomisation
def saliency(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from doll_core.attribution.api import explain

    return explain(model, images, targets, "saliency")


def quantus_saliency(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> Any:
    maps = saliency(model, torch.from_numpy(inputs), torch.as_tensor(targets).long()[:, None])
    return maps.numpy()  # [N, 1, H, W]


def test_cascading_randomisation_equals_quantus_mprt_layer_by_layer() -> None:
    model = SmallCNN().eval()
    images, classes, _ = data()
    maps = saliency(model, images, classes[:, None])
    batch = MetricBatch(
        maps, classes[:, None], images=images, model=model, explain=saliency, seed=42
    )
    every_layer = metric("cascading_randomisation", layers=None)
    ours = run_metric(every_layer, "cascading_randomisation", batch)
    theirs = quantus.MPRT(
        layer_order="top_down", seed=42, abs=True, normalise=True, disable_warnings=True
    )(
        a_batch=maps.numpy(),
        explain_func=quantus_saliency,
        **quantus_call(model, images, classes),
    )
    assert list(ours.steps) == [k for k in theirs if k != "original"]
    for layer, values in ours.steps.items():
        expected = torch.tensor(theirs[layer], dtype=torch.float64)
        assert torch.allclose(values[:, 0], expected, atol=1e-6), layer
    # deliberate difference: DoLL's summary is the mean over the layers only; Quantus'
    # return_average_correlation also averages in its "original" entry
    assert torch.allclose(
        ours.values[:, 0], torch.stack([v[:, 0] for v in ours.steps.values()]).mean(dim=0)
    )


def test_random_logit_equals_quantus_on_a_two_class_model() -> None:
    model = SmallCNN(classes=2).eval()
    images, _, _ = data()
    classes = torch.tensor([0, 1, 1, 0])
    maps = saliency(model, images, classes[:, None])
    batch = MetricBatch(maps, classes[:, None], images=images, model=model, explain=saliency)
    ours = run_metric(metric("random_logit", similarity="spearman"), "random_logit", batch)
    from quantus.functions.similarity_func import correlation_spearman

    theirs = quantus.RandomLogit(num_classes=2, similarity_func=correlation_spearman, **PLAIN)(
        a_batch=maps.numpy(), explain_func=quantus_saliency, **quantus_call(model, images, classes)
    )
    assert torch.allclose(ours.values[:, 0], torch.tensor(theirs, dtype=torch.float64), atol=1e-6)


# ------------------------------------------------------------------------ complexity
def test_sparseness_and_entropy_equal_quantus() -> None:
    model = SmallCNN().eval()
    images, classes, maps = data()
    batch = one_target_batch(model, images, classes, maps)
    absolute = np.abs(maps[:, None].numpy()).astype(np.float64)
    call = quantus_call(model, images, classes)
    gini = quantus.Sparseness(**PLAIN)(a_batch=absolute.copy(), **call)
    entropy = quantus.Complexity(**PLAIN)(a_batch=absolute.copy(), **call)
    ours_gini = run_metric(metric("sparseness"), "sparseness", batch).values[:, 0]
    ours_entropy = run_metric(metric("entropy"), "entropy", batch).values[:, 0]
    assert torch.allclose(ours_gini, torch.tensor(gini, dtype=torch.float64), atol=1e-9)
    # Quantus takes log(p + 1e-12): 1e-9 covers it
    assert torch.allclose(ours_entropy, torch.tensor(entropy, dtype=torch.float64), atol=1e-9)


# ------------------------------------------------------------------------ localization
@pytest.mark.parametrize(
    ("ours_name", "params", "theirs_class", "theirs_params"),
    [
        ("pointing_game", {}, "PointingGame", {}),
        ("relevance_rank_accuracy", {}, "RelevanceRankAccuracy", {}),
        ("top_k_intersection", {"k": 10}, "TopKIntersection", {"k": 10}),
        ("relevance_mass_accuracy", {}, "RelevanceMassAccuracy", {}),
        ("pixel_auroc", {}, "AUC", {}),
    ],
)
def test_localization_equals_quantus_on_non_negative_maps(
    ours_name: str, params: dict[str, Any], theirs_class: str, theirs_params: dict[str, Any]
) -> None:
    model = SmallCNN().eval()
    images, classes, maps = data(count=6)
    maps = maps.abs()  # DoLL reads the positive part; Quantus the signed map (see the docs)
    masks = torch.zeros(6, SIZE, SIZE, dtype=torch.bool)
    for i in range(6):
        masks[i, i : i + 3, 1 : 2 + i] = True
    batch = MetricBatch(maps[:, None], classes[:, None], masks=masks[:, None])
    ours = run_metric(metric(ours_name, **params), ours_name, batch).values[:, 0]
    theirs = getattr(quantus, theirs_class)(**theirs_params, **PLAIN)(
        a_batch=maps[:, None].numpy(),
        s_batch=masks[:, None].numpy().astype(np.float32),
        **quantus_call(model, images, classes),
    )
    assert torch.allclose(ours, torch.tensor(np.asarray(theirs, dtype=np.float64)), atol=1e-9)


def test_ssim_equals_scikit_image_on_two_dimensional_maps() -> None:
    from skimage.metrics import structural_similarity

    generator = torch.Generator().manual_seed(5)
    a = torch.rand(3, 12, 10, generator=generator)
    b = a + 0.3 * torch.randn(3, 12, 10, generator=generator)
    ours = ssim(a, b)
    for i in range(3):
        x, y = a[i].double().numpy(), b[i].double().numpy()
        span = float(max(x.max(), y.max()) - min(x.min(), y.min()))
        expected = structural_similarity(x, y, data_range=span)
        assert float(ours[i]) == pytest.approx(expected, abs=1e-9)
