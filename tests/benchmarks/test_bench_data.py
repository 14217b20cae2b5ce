"""Data speed: phantom generation (one process) and CheXpert-reader throughput through a
DataLoader with 2 workers. Run with ``nox -s bench``; images/s land in ``extra_info``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import DataLoader

from doll_core.data.samples import collate_samples
from doll_core.phantom.writer import PhantomSpec, write_phantom
from doll_core.registry import get_registry

ONLY_CHEXPERT = {"n_organs": 0, "n_infection": 0, "n_jsrt": 0, "n_valid": 0}


def test_bench_phantom_generation_one_process(benchmark: Any, tmp_path: Path) -> None:
    spec = PhantomSpec(n_train=100, size=256, **ONLY_CHEXPERT)
    runs = iter(range(100))

    def generate() -> dict[str, Any]:
        return write_phantom(tmp_path / f"run{next(runs)}", spec, workers=1)

    manifest = benchmark.pedantic(generate, rounds=2, iterations=1)
    benchmark.extra_info["images_per_second"] = manifest["images_per_second"]


@pytest.fixture(scope="module")
def phantom_256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "phantom"
    write_phantom(root, PhantomSpec(n_train=256, size=256, **ONLY_CHEXPERT), workers=2)
    return root


def test_bench_chexpert_loader_two_workers(benchmark: Any, phantom_256: Path) -> None:
    dataset = get_registry().create("dataset", "chexpert", root=phantom_256, size=224)
    loader = DataLoader(
        dataset, batch_size=32, num_workers=2, collate_fn=collate_samples, persistent_workers=True
    )

    def one_epoch() -> float:
        started = time.perf_counter()
        count = sum(len(batch["image"]) for batch in loader)
        assert count == len(dataset)
        return count / (time.perf_counter() - started)

    one_epoch()  # start the workers
    rate = benchmark.pedantic(one_epoch, rounds=3, iterations=1)
    benchmark.extra_info["images_per_second"] = round(rate, 1)
