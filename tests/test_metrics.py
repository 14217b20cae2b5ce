"""The metric plugin kind: known answers on tiny inputs, checked contracts, and batched
results equal to one-sample-at-a-time results."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from doll_core import hookimpl
from doll_core.errors import DollError, PluginError
from doll_core.metrics.base import MetricBatch, check_needs, run_metric
from doll_core.metrics.imputation import linear_imputation
from doll_core.metrics.perturbation import curve_area
from doll_core.metrics.similarity import average_ranks, spearman, ssim
from doll_core.registry import Registry, get_registry

SIZE = 8


def metric(name: str, **params: Any) -> Any:
    return get_registry().create("metric", name, **params)


def score(name: str, batch: MetricBatch, **params: Any) -> torch.Tensor:
    return run_metric(metric(name, **params), name, batch).values


class Linear(nn.Module):
    """logit[k] = Σ w[k] · x + b[k] on 1-channel images ``[B, 1, 8, 8]``."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, SIZE * SIZE, generator=generator))
        self.bias = nn.Parameter(torch.randn(classes, generator=generator))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight.T + self.bias


def contributions(model: Linear, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Exact input-times-gradient of a linear model: ``[B, T, H, W]`` (0 for padding)."""
    weights = model.weight.detach()[targets.clamp(min=0)].view(*targets.shape, SIZE, SIZE)
    maps = weights * images[:, :1]
    return torch.where((targets >= 0)[..., None, None], maps, torch.zeros_like(maps))


def images_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, SIZE, SIZE, generator=generator)
    return images, torch.tensor([[0, 2], [1, -1]])


# ------------------------------------------------------------------------ the plugin kind
def test_every_builtin_metric_declares_category_direction_needs_and_a_reference() -> None:
    registry = get_registry()
    names = registry.names("metric")
    assert len(names) == 17
    for name in names:
        info = registry.get("metric", name)
        built = registry.create("metric", name)
        check_needs(built, name, {"images", "model", "masks", "explain"})
        assert info.metadata["category"] == built.category
        assert info.metadata["higher_is_better"] is built.higher_is_better
        assert info.metadata["reference"] and info.description.endswith(".")


def test_a_third_party_metric_is_registered_and_checked() -> None:
    class MeanRelevance:
        category = "complexity"
        higher_is_better = True
        needs = frozenset()

        def compute(self, batch: MetricBatch) -> torch.Tensor:
            return batch.maps.mean(dim=(2, 3))

    class WrongShape(MeanRelevance):
        def compute(self, batch: MetricBatch) -> torch.Tensor:
            return batch.maps.mean(dim=(1, 2, 3))

    class Plugin:
        @hookimpl
        def doll_register_metrics(self, register: Any) -> None:
            register("mean_relevance", MeanRelevance)
            register("wrong_shape", WrongShape)

    registry = Registry()
    registry.add_plugin(Plugin(), name="mine")
    assert registry.names("metric") == ["mean_relevance", "wrong_shape"]
    maps = torch.ones(2, 2, 4, 4)
    batch = MetricBatch(maps, torch.tensor([[0, 1], [1, -1]]))
    values = run_metric(registry.create("metric", "mean_relevance"), "mean_relevance", batch)
    assert values.values.dtype == torch.float64
    assert values.values[0].tolist() == [1.0, 1.0] and math.isnan(values.values[1, 1])
    with pytest.raises(PluginError, match=r"'wrong_shape' returned values of shape \[2\]"):
        run_metric(registry.create("metric", "wrong_shape"), "wrong_shape", batch)


def test_a_metric_is_refused_before_work_when_its_needs_are_missing() -> None:
    with pytest.raises(DollError, match="'iou' needs masks"):
        check_needs(metric("iou"), "iou", {"images", "model", "explain"})
    with pytest.raises(DollError, match="'deletion' needs images, model"):
        check_needs(metric("deletion"), "deletion", {"masks"})

    class Odd:
        category, higher_is_better, needs = "vibes", True, frozenset()

    with pytest.raises(PluginError, match="category 'vibes'"):
        check_needs(Odd(), "odd", set())


# ------------------------------------------------------------------------ localization
LOCALIZATION = (
    "pointing_game",
    "hit_rate",
    "iou",
    "dice",
    "relevance_rank_accuracy",
    "relevance_mass_accuracy",
    "pixel_auroc",
)


def mask_batch(maps: torch.Tensor, masks: torch.Tensor) -> MetricBatch:
    return MetricBatch(maps.float(), torch.zeros(maps.shape[:2], dtype=torch.long), masks=masks)


def square_mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    mask[..., 2:5, 3:6] = True
    return mask


@pytest.mark.parametrize("name", [*LOCALIZATION, "top_k_intersection"])
def test_a_map_equal_to_the_mask_localises_perfectly_and_its_complement_not_at_all(
    name: str,
) -> None:
    mask = square_mask()
    params = {"k": 5} if name == "top_k_intersection" else {}
    assert float(score(name, mask_batch(mask, mask), **params)) == 1.0
    outside = score(name, mask_batch(~mask, mask), **params)
    assert float(outside) == 0.0
    empty = torch.zeros_like(mask)
    assert math.isnan(float(score(name, mask_batch(mask, empty), **params)))


def test_localization_hand_computed_on_a_tiny_map() -> None:
    maps = torch.zeros(1, 1, SIZE, SIZE)
    maps[0, 0, 2, 3] = 4.0  # inside
    maps[0, 0, 0, 0] = 4.0  # tied maximum, outside
    maps[0, 0, 3, 4] = 2.0  # inside
    maps[0, 0, 7, 7] = -5.0  # negative: not relevance for the target
    batch = mask_batch(maps, square_mask())
    assert float(score("pointing_game", batch)) == 0.5  # one of two tied maxima inside
    assert float(score("hit_rate", batch)) == 0.0  # the first maximum, row-major: (0, 0)
    assert float(score("relevance_mass_accuracy", batch)) == pytest.approx(6 / 10)
    # rank accuracy: the 9 highest pixels (mask size) hold 2 of the mask's pixels plus ties
    # at 0 broken by position: (0, 1) … are outside, so 2 / 9
    assert float(score("relevance_rank_accuracy", batch)) == pytest.approx(2 / 9)
    assert float(score("top_k_intersection", batch, k=3)) == pytest.approx(2 / 3)
    # AUROC of the positive part: 9 positives (2 high, 7 at 0) against 55 negatives
    # (1 at 4, 54 at 0): P(pos > neg) + P(tie) / 2
    wins = 2 * 54 + 1 * 0 + 7 * 0
    ties = 1 * 1 + 7 * 54
    assert float(score("pixel_auroc", batch)) == pytest.approx((wins + ties / 2) / (9 * 55))


# ------------------------------------------------------------------------ complexity
def test_sparseness_and_entropy_of_a_one_hot_and_a_flat_map() -> None:
    one_hot = torch.zeros(1, 1, SIZE, SIZE)
    one_hot[0, 0, 4, 4] = -3.0  # magnitude counts, not sign
    flat = torch.full((1, 1, SIZE, SIZE), 0.5)
    targets = torch.zeros(1, 1, dtype=torch.long)
    pixels = SIZE * SIZE
    assert float(score("sparseness", MetricBatch(one_hot, targets))) == pytest.approx(
        (pixels - 1) / pixels, abs=1e-5
    )
    assert float(score("sparseness", MetricBatch(flat, targets))) == pytest.approx(0.0, abs=1e-9)
    assert float(score("entropy", MetricBatch(one_hot, targets))) == pytest.approx(0.0)
    assert float(score("entropy", MetricBatch(flat, targets))) == pytest.approx(math.log(pixels))
    assert math.isnan(float(score("entropy", MetricBatch(torch.zeros_like(flat), targets))))


# ------------------------------------------------------------------------ faithfulness
def linear_batch(**kwargs: Any) -> tuple[Linear, MetricBatch]:
    model = Linear().eval()
    images, targets = images_and_targets()
    maps = kwargs.pop("maps", None)
    if maps is None:
        maps = contributions(model, images, targets)
    return model, MetricBatch(maps, targets, images=images, model=model, **kwargs)


def test_deleting_the_most_relevant_patches_of_a_linear_model_drops_the_logit_by_their_sum():
    model, batch = linear_batch()
    deletion = metric("deletion", patch=2, steps=16, baseline="zeros", output="logit")
    curves = deletion.curves(batch, order="morf", insertion=False)  # [B, T, 17]
    with torch.no_grad():
        logits = model(batch.images)
    for b, t in ((0, 0), (0, 1), (1, 0)):
        target = int(batch.targets[b, t])
        patch_sums = batch.maps[b, t].view(4, 2, 4, 2).sum(dim=(1, 3)).flatten()
        dropped = torch.cumsum(patch_sums.sort(descending=True).values.double(), 0)
        expected = float(logits[b, target]) - torch.cat([torch.zeros(1).double(), dropped])
        assert torch.allclose(curves[b, t], expected, atol=1e-4)
        assert curves[b, t, -1] == pytest.approx(float(model.bias[target].detach()), abs=1e-5)
    assert torch.isnan(curves[1, 1]).all()
    area = score("deletion", batch, patch=2, steps=16, baseline="zeros", output="logit")
    assert torch.allclose(area[batch.real], curve_area(curves)[batch.real])


def test_insertion_mirrors_deletion_and_abpc_rewards_the_true_map_over_its_reverse() -> None:
    _, batch = linear_batch()
    params = {"patch": 2, "steps": 16, "baseline": "zeros", "output": "logit"}
    insertion = metric("insertion", **params).curves(batch, order="morf", insertion=True)
    lerf = metric("deletion", **params).curves(batch, order="lerf", insertion=False)
    real = batch.real
    # inserting the most relevant first = deleting the least relevant first, read backwards
    assert torch.allclose(insertion[real], lerf[real].flip(-1), atol=1e-5)
    assert metric("deletion", order="lerf").higher_is_better is True
    assert metric("deletion").higher_is_better is False
    lerf_area = score("deletion", batch, order="lerf", **params)
    assert torch.allclose(lerf_area[real], curve_area(lerf)[real])
    true_abpc = score("abpc", batch, **params)
    _, reversed_batch = linear_batch(maps=-batch.maps)
    reversed_abpc = score("abpc", reversed_batch, **params)
    assert (true_abpc[real] > 0).all()
    assert torch.allclose(reversed_abpc[real], -true_abpc[real], atol=1e-6)


def test_faithfulness_correlation_of_the_exact_contributions_is_one() -> None:
    _, batch = linear_batch()
    exact = score("faithfulness_correlation", batch, runs=20, subset=8, output="logit")
    assert torch.allclose(exact[batch.real], torch.ones(3, dtype=torch.float64), atol=1e-6)
    noise = torch.randn(batch.maps.shape, generator=torch.Generator().manual_seed(3))
    _, noisy = linear_batch(maps=noise)
    random = score("faithfulness_correlation", noisy, runs=20, subset=8, output="logit")
    assert (random[batch.real].abs() < 0.9).all()


def test_linear_imputation_recovers_a_linear_ramp_inside_the_image() -> None:
    y, x = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    ramp = (0.3 * x + 0.1 * y + 1.0).double()[None, None]
    removed = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    removed[..., 2:6, 1:7] = True
    filled = linear_imputation(ramp.clone().masked_fill(removed, 0.0), removed)
    assert torch.allclose(filled, ramp, atol=1e-8)


def test_road_keeps_the_output_when_nothing_relevant_is_removed() -> None:
    model, batch = linear_batch(maps=torch.zeros(2, 2, SIZE, SIZE))
    batch.images = torch.full_like(batch.images, 0.25)  # constant: imputation restores it
    road = score("road", batch, noise=0.0, output="logit")
    with torch.no_grad():
        logits = model(batch.images)
    expected = logits.gather(1, batch.targets.clamp(min=0)).double()
    assert torch.allclose(road[batch.real], expected[batch.real], atol=1e-5)


# ------------------------------------------------------------------------ randomisation
class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(8 * SIZE * SIZE, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


def saliency(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from doll_core.attribution.api import explain

    return explain(model, images, targets, "saliency")


def test_randomising_every_layer_drives_the_rank_correlation_of_gradients_towards_zero() -> None:
    model = SmallCNN().eval()
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(6, 1, SIZE, SIZE, generator=generator)
    targets = torch.tensor([[0], [1], [2], [0], [1], [2]])
    batch = MetricBatch(
        saliency(model, images, targets), targets, images=images, model=model, explain=saliency
    )
    result = run_metric(metric("cascading_randomisation"), "cascading_randomisation", batch)
    assert list(result.steps) == ["head", "features.2", "features.0"]
    last = result.steps["features.0"]
    assert float(last.abs().mean()) < 0.3
    # the same model again (nothing randomised) would score 1: check the similarity itself
    same = MetricBatch(
        batch.maps, targets, images=images, model=model, explain=lambda m, i, t: batch.maps
    )
    unchanged = run_metric(metric("cascading_randomisation"), "cascading_randomisation", same)
    assert torch.allclose(unchanged.values, torch.ones(6, 1, dtype=torch.float64))
    fewer = run_metric(metric("cascading_randomisation", layers=1), "c", batch)
    assert list(fewer.steps) == ["features.0"]
    assert torch.equal(fewer.steps["features.0"], last)


def test_random_logit_is_one_for_a_map_that_ignores_the_class() -> None:
    model = Linear().eval()
    images, targets = images_and_targets()

    def class_blind(m: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        maps = x[:, :1].expand(-1, t.shape[1], -1, -1).clone()
        return torch.where((t >= 0)[..., None, None], maps, torch.zeros_like(maps))

    blind = MetricBatch(class_blind(model, images, targets), targets, images=images, model=model)
    blind.explain = class_blind
    values = score("random_logit", blind)
    assert torch.allclose(values[blind.real], torch.ones(3, dtype=torch.float64))
    others = metric("random_logit").other_targets(targets, 3, seed=0)
    assert ((others != targets) | (targets < 0)).all() and (others[targets < 0] == -1).all()


# ------------------------------------------------------------------------ similarity helpers
def test_average_ranks_and_spearman_handle_ties_like_scipy() -> None:
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0]])
    assert average_ranks(values).tolist() == [[4.5, 1.5, 4.5, 3.0, 1.5]]
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert float(spearman(a, a**3)) == pytest.approx(1.0)
    assert float(spearman(a, -a)) == pytest.approx(-1.0)
    assert math.isnan(float(spearman(a, torch.ones_like(a))))


def test_ssim_of_identical_maps_is_one_and_falls_with_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 12, 12, generator=generator)
    assert torch.allclose(ssim(maps, maps), torch.ones(3, dtype=torch.float64))
    noisy = maps + 0.5 * torch.rand(3, 12, 12, generator=generator)
    assert (ssim(maps, noisy) < 0.9).all()


# ------------------------------------------------------------------------ batched = one by one
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("deletion", {"patch": 2, "steps": 8}),
        ("insertion", {"patch": 2, "steps": 8, "baseline": "blurred"}),
        ("abpc", {"patch": 3, "steps": 4, "baseline": "mean"}),
        ("road", {"fractions": (0.25, 0.5), "noise": 0.0}),
    ],
)
def test_batched_scores_equal_one_sample_at_a_time(name: str, params: dict[str, Any]) -> None:
    model, batch = linear_batch(max_rows=7)
    together = score(name, batch, **params)
    for b, t in ((0, 0), (0, 1), (1, 0)):
        alone = MetricBatch(
            batch.maps[b : b + 1, t : t + 1],
            batch.targets[b : b + 1, t : t + 1],
            images=batch.images[b : b + 1],
            model=model,
            max_rows=1,
        )
        single = float(score(name, alone, **params))
        assert float(together[b, t]) == pytest.approx(single, abs=1e-6)
