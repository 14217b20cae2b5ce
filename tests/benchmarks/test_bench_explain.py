"""The multi-target engine against captum's per-target loop, side by side in one run.

Integrated Gradients, 14 targets per image, 16 Gauss-Legendre steps, batch 4, random
weights, on the CPU. captum's loop calls ``IntegratedGradients.attribute`` once per target
slot (a whole batch per call, one target per image); the engine does one forward pass per
chunk and one backward pass per slot. The ratio is printed and stored in ``extra_info``.
Run with ``nox -s bench`` (or ``pytest tests/benchmarks --benchmark-only -s``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from captum.attr import IntegratedGradients

import doll_core
from doll_core.attribution.engine import EngineOptions
from doll_core.registry import get_registry

STEPS, TARGETS = 16, 14


def _captum_loop(
    model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    captum = IntegratedGradients(model)
    maps = [
        captum.attribute(
            images, target=targets[:, j].tolist(), n_steps=STEPS, internal_batch_size=64
        ).sum(dim=1)
        for j in range(targets.shape[1])
    ]
    return torch.stack(maps, dim=1)


@pytest.mark.parametrize(("backbone", "size"), [("resnet18", 64), ("tiny_cnn", 128)])
def test_bench_engine_vs_captum_integrated_gradients(
    benchmark: Any, backbone: str, size: int
) -> None:
    torch.manual_seed(0)
    model = get_registry().create("backbone", backbone).build(TARGETS, 1).eval()
    images = torch.rand(4, 1, size, size)
    targets = torch.arange(TARGETS).repeat(4, 1)

    def engine() -> torch.Tensor:
        return doll_core.explain(
            model, images, targets, "integrated_gradients", n_steps=STEPS, engine=EngineOptions()
        )

    ours = benchmark.pedantic(engine, rounds=3, iterations=1, warmup_rounds=1)
    captum_seconds = []
    for _ in range(3):
        started = time.perf_counter()
        reference = _captum_loop(model, images, targets)
        captum_seconds.append(time.perf_counter() - started)
    error = float((ours - reference).abs().max() / reference.abs().max())
    assert error <= 1e-4
    ratio = min(captum_seconds) / benchmark.stats.stats.min
    benchmark.extra_info.update(
        {
            "captum_min_seconds": min(captum_seconds),
            "speedup_vs_captum": round(ratio, 2),
            "relative_error": error,
        }
    )
    print(
        f"\n{backbone} {size}px: engine {benchmark.stats.stats.min:.3f} s, captum "
        f"{min(captum_seconds):.3f} s per batch: {ratio:.2f}x, relative error {error:.1e}"
    )


def test_bench_compiled_engine_vs_eager(benchmark: Any) -> None:
    """``compile=True`` against the eager engine, same IG work (resnet18, 64 px, batch 4,
    14 targets): the compile is done in the warm-up round; the ratio and the compile time
    go to ``extra_info``. On a GPU, see docs/gpu.md."""
    torch.manual_seed(0)
    model = get_registry().create("backbone", "resnet18").build(TARGETS, 1).eval()
    images = torch.rand(4, 1, 64, 64)
    targets = torch.arange(TARGETS).repeat(4, 1)
    compiled = get_registry().create(
        "explainer",
        "integrated_gradients",
        n_steps=STEPS,
        engine=EngineOptions(max_rows=64, compile=True),
    )
    ours = benchmark.pedantic(
        lambda: compiled.attribute(model, images, targets), rounds=3, iterations=1, warmup_rounds=1
    )
    eager_seconds = []
    for _ in range(3):
        started = time.perf_counter()
        reference = doll_core.explain(model, images, targets, n_steps=STEPS)
        eager_seconds.append(time.perf_counter() - started)
    error = float((ours - reference).abs().max() / reference.abs().max())
    assert error <= 1e-4
    ratio = min(eager_seconds) / benchmark.stats.stats.min
    report = compiled.performance_report()["compile"]
    benchmark.extra_info.update(
        {"speedup_vs_eager": round(ratio, 2), "relative_error": error, "compile": report}
    )
    print(
        f"\ncompiled {benchmark.stats.stats.min:.3f} s, eager {min(eager_seconds):.3f} s: "
        f"{ratio:.2f}x, compile {report['compile_seconds']} s, relative error {error:.1e}"
    )


@pytest.mark.parametrize("targets_per_image", [1, 14])
def test_bench_engine_host_overhead(benchmark: Any, targets_per_image: int) -> None:
    """The engine's own host work, with a model that costs next to nothing (one linear
    layer on 8x8 images): IG at 50 steps, batch 8, 100 rows per pass (4 passes, one backward
    pass per target slot). What remains is the engine's Python and the small tensor ops
    around each pass; on a GPU it is the floor under the per-image cost (docs/gpu.md)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, TARGETS)).eval()
    images = torch.rand(8, 1, 8, 8)
    targets = torch.full((8, TARGETS), -1)
    targets[:, :targets_per_image] = torch.arange(targets_per_image)
    explainer = get_registry().create(
        "explainer",
        "integrated_gradients",
        n_steps=50,
        engine=EngineOptions(max_rows=100, completeness=False),
    )
    benchmark.pedantic(
        lambda: explainer.attribute(model, images, targets),
        rounds=20,
        iterations=1,
        warmup_rounds=2,
    )
    per_image_ms = benchmark.stats.stats.median / 8 * 1e3
    benchmark.extra_info["median_ms_per_image"] = round(per_image_ms, 3)
    print(f"\n{targets_per_image} targets: {per_image_ms:.3f} ms per image of host work")
