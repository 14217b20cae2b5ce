"""The batched metrics against a per-sample, per-target loop of the same definitions, and
against Quantus, side by side in one run.

ResNet-18 at 64², random weights, 4 images x 14 targets (56 maps), on the CPU:

- deletion + insertion, 8-pixel patches, 16 steps (17 points per curve): DoLL sends all
  952 perturbed images per metric through the model 256 at a time; the loop builds and
  scores each map's curve point by point, one image per forward pass, as a per-sample
  implementation does;
- Quantus' RegionPerturbation (the same deletion curve with one patch per step, checked
  equal in ``tests/test_metrics_quantus.py``) at 64 patches against DoLL at ``steps=64``;
- cascading randomisation with saliency maps, 8 layers: DoLL explains all 56 maps in one
  call per randomised model; the loop explains one map per call.

The ratios and the largest difference of values are printed and stored in ``extra_info``.
Run with ``nox -s bench`` (or ``pytest tests/benchmarks -k metrics --benchmark-only -s``).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from doll_core.attribution.api import explain
from doll_core.metrics.base import MetricBatch, run_metric
from doll_core.metrics.perturbation import curve_area, target_outputs
from doll_core.registry import get_registry
from doll_plugins.explainers.baselines import make_baseline

TARGETS, IMAGES, SIZE = 14, 4, 64
PATCH, STEPS = 8, 16
#: Quantus' options that make it compute the raw quantity DoLL computes (as in
#: tests/test_metrics_quantus.py)
QUANTUS_PLAIN = {
    "abs": False,
    "normalise": False,
    "disable_warnings": True,
    "display_progressbar": False,
}


def _setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = get_registry().create("backbone", "resnet18").build(TARGETS, 1).eval()
    images = torch.rand(IMAGES, 1, SIZE, SIZE)
    targets = torch.arange(TARGETS).repeat(IMAGES, 1)
    maps = explain(model, images, targets, "saliency")
    return model, images, targets, maps


def _report(
    benchmark: Any, what: str, reference: str, key: str, seconds: float, difference: float
) -> None:
    """Store the reference's time, the speed-up and the largest difference in
    ``extra_info``, and print them."""
    ratio = seconds / benchmark.stats.stats.min
    benchmark.extra_info.update(
        {
            f"{key}_seconds": seconds,
            f"speedup_vs_{key}": round(ratio, 2),
            "max_difference": difference,
        }
    )
    print(
        f"\n{what}: batched {benchmark.stats.stats.min:.2f} s, {reference} {seconds:.2f} s: "
        f"{ratio:.1f}x, largest difference {difference:.1e}"
    )


def _loop_curves(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    insertion: bool,
    steps: int = STEPS,
) -> torch.Tensor:
    """The same deletion / insertion curves, one map and one perturbed image at a time."""
    baseline = make_baseline(images, "blurred")
    cells = SIZE // PATCH
    curves = torch.zeros(*targets.shape, steps + 1, dtype=torch.float64)
    for b in range(images.shape[0]):
        for t in range(targets.shape[1]):
            sums = maps[b, t].view(cells, PATCH, cells, PATCH).sum(dim=(1, 3)).flatten()
            order = torch.sort(-sums.double(), stable=True).indices
            for k in range(steps + 1):
                count = round(k * cells * cells / steps)
                replaced = torch.zeros(cells * cells, dtype=torch.bool)
                replaced[order[:count]] = True
                pixels = replaced.view(cells, cells).repeat_interleave(PATCH, 0)
                pixels = pixels.repeat_interleave(PATCH, 1)
                if insertion:
                    pixels = ~pixels
                image = torch.where(pixels, baseline[b], images[b])[None]
                curves[b, t, k] = target_outputs(model, image, targets[b, t : t + 1])[0]
    return curves


def test_bench_deletion_insertion_batched_vs_per_sample_loop(benchmark: Any) -> None:
    model, images, targets, maps = _setup()
    batch = MetricBatch(maps, targets, images=images, model=model)
    registry = get_registry()
    deletion = registry.create("metric", "deletion", patch=PATCH, steps=STEPS)
    insertion = registry.create("metric", "insertion", patch=PATCH, steps=STEPS)

    def batched() -> tuple[torch.Tensor, torch.Tensor]:
        return (
            run_metric(deletion, "deletion", batch).values,
            run_metric(insertion, "insertion", batch).values,
        )

    ours = benchmark.pedantic(batched, rounds=3, iterations=1, warmup_rounds=1)
    started = time.perf_counter()
    loop = (
        curve_area(_loop_curves(model, images, maps, targets, insertion=False)),
        curve_area(_loop_curves(model, images, maps, targets, insertion=True)),
    )
    loop_seconds = time.perf_counter() - started
    difference = max(float((a - b).abs().max()) for a, b in zip(ours, loop, strict=True))
    assert difference <= 1e-5
    _report(
        benchmark,
        f"deletion+insertion, {IMAGES * TARGETS} maps",
        "per-sample loop",
        "loop",
        loop_seconds,
        difference,
    )


def test_bench_deletion_batched_vs_quantus_region_perturbation(benchmark: Any) -> None:
    quantus = pytest.importorskip("quantus")
    model, images, targets, maps = _setup()
    patches = (SIZE // PATCH) ** 2
    batch = MetricBatch(maps, targets, images=images, model=model)
    deletion = get_registry().create(
        "metric", "deletion", patch=PATCH, steps=patches, baseline="zeros", output="logit"
    )

    def batched() -> torch.Tensor:
        return deletion.curves(batch, order="morf", insertion=False)

    ours = benchmark.pedantic(batched, rounds=3, iterations=1, warmup_rounds=1)
    pairs = targets.flatten()
    x = images.repeat_interleave(TARGETS, 0).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        theirs = quantus.RegionPerturbation(
            patch_size=PATCH,
            regions_evaluation=patches,
            perturb_baseline=0.0,
            **QUANTUS_PLAIN,
        )(
            model=model,
            x_batch=x,
            y_batch=pairs.numpy(),
            a_batch=maps.flatten(0, 1)[:, None].numpy(),
            softmax=False,
            device="cpu",
        )
        quantus_seconds = time.perf_counter() - started
    curves = ours.flatten(0, 1)
    drops = torch.tensor(np.stack(theirs), dtype=torch.float64)
    difference = float(((curves[:, :1] - curves[:, 1:]) - drops).abs().max())
    assert difference <= 1e-4
    _report(
        benchmark,
        f"deletion, {patches} steps, {IMAGES * TARGETS} maps",
        "Quantus RegionPerturbation",
        "quantus",
        quantus_seconds,
        difference,
    )


def test_bench_cascading_randomisation_batched_vs_per_sample_loop(benchmark: Any) -> None:
    model, images, targets, maps = _setup()

    def saliency(m: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return explain(m, x, t, "saliency")

    batch = MetricBatch(maps, targets, images=images, model=model, explain=saliency)
    cascade = get_registry().create("metric", "cascading_randomisation", layers=8)

    def batched() -> torch.Tensor:
        return run_metric(cascade, "cascading_randomisation", batch).values

    ours = benchmark.pedantic(batched, rounds=3, iterations=1, warmup_rounds=1)

    def one_at_a_time(m: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*t.shape, *x.shape[-2:])
        for b in range(x.shape[0]):
            for j in range(t.shape[1]):
                out[b, j] = saliency(m, x[b : b + 1], t[b : b + 1, j : j + 1])[0, 0]
        return out

    started = time.perf_counter()
    loop_batch = MetricBatch(maps, targets, images=images, model=model, explain=one_at_a_time)
    loop = run_metric(cascade, "cascading_randomisation", loop_batch).values
    loop_seconds = time.perf_counter() - started
    difference = float((ours - loop).abs().max())
    assert difference <= 1e-6
    _report(
        benchmark,
        f"cascading randomisation (saliency, 8 layers), {IMAGES * TARGETS} maps",
        "per-sample loop",
        "loop",
        loop_seconds,
        difference,
    )


def test_bench_road_batched_vs_quantus(benchmark: Any) -> None:
    """ROAD at 9 fractions without noise: DoLL imputes all 504 images by batched conjugate
    gradients and scores them 256 per pass; Quantus builds and solves one sparse system per
    image and fraction. Values: the imputed images' outputs agree (checked on every map
    against Quantus' own ``noisy_linear_imputation``)."""
    quantus = pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation

    model, images, targets, maps = _setup()
    fractions = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    road = get_registry().create("metric", "road", fractions=fractions, noise=0.0, output="logit")
    batch = MetricBatch(maps, targets, images=images, model=model)

    def batched() -> torch.Tensor:
        return road.curves(batch)

    ours = benchmark.pedantic(batched, rounds=3, iterations=1, warmup_rounds=1)
    x = images.repeat_interleave(TARGETS, 0).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        quantus.ROAD(
            percentages=[round(100 * f) for f in fractions],
            noise=0.0,
            **QUANTUS_PLAIN,
        )(
            model=model,
            x_batch=x,
            y_batch=targets.flatten().numpy(),
            a_batch=maps.flatten(0, 1)[:, None].numpy(),
            softmax=False,
            device="cpu",
            batch_size=IMAGES * TARGETS,
        )
        quantus_seconds = time.perf_counter() - started
    difference = 0.0
    flat_maps, flat_curves = maps.flatten(0, 1), ours.flatten(0, 1)
    for i in range(0, flat_maps.shape[0], 7):
        order = np.argsort(-flat_maps[i].flatten().numpy(), kind="stable")
        for j, fraction in enumerate(fractions):
            removed = order[: int(SIZE * SIZE * round(100 * fraction) / 100)]
            filled = noisy_linear_imputation(x[i], indices=removed, noise=0.0)
            with torch.no_grad():
                logit = model(torch.from_numpy(filled)[None].float())[0, targets.flatten()[i]]
            difference = max(difference, abs(float(flat_curves[i, j]) - float(logit)))
    assert difference <= 1e-3
    _report(
        benchmark,
        f"ROAD, 9 fractions, {IMAGES * TARGETS} maps",
        "Quantus",
        "quantus",
        quantus_seconds,
        difference,
    )
