"""Classifier training on real full-size radiographs (tests/data/real/full-size: 2000²
JPEGs, 640-wide PNGs, 1000-2000 px pediatric JPEGs), without and with the decoded-image
cache (doll_core.data.decoded). Run with ``nox -s bench``; each run's ``extra_info`` gives
images/s of the epochs after the first and the fraction of step time spent waiting for
data (the goal: below 5% from the second epoch, with the cache, on 2 cores)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from doll_core.configuration import parse_config
from doll_core.observations import OBSERVATIONS
from doll_core.training.classifier import train_classifier
from doll_core.training.config import ClassifierTrainingConfig

FULL_SIZE = Path(__file__).parent.parent / "data" / "real" / "full-size"
COPIES = 12  # 8 files x 12 = 96 training images


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full-size files, each copied ``COPIES`` times, as a CheXpert-small layout
    (copies are new files: each is decoded, as a larger set's files would be)."""
    root = tmp_path_factory.mktemp("real") / "data"
    sources = sorted(p for p in FULL_SIZE.iterdir() if p.suffix != ".md")
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(OBSERVATIONS)
    for split, copies in (("train", COPIES), ("valid", 1)):
        lines = [header]
        for k, source in enumerate(sources * copies):
            relative = f"CheXpert-v1.0-small/{split}/patient{k:05d}/study1/view1_frontal.jpg"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / relative)
            labels = ["1.0" if (k + j) % 3 == 0 else "0.0" for j in range(len(OBSERVATIONS))]
            lines.append(f"{relative},Female,60,Frontal,PA," + ",".join(labels))
        (root / "CheXpert-v1.0-small" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("cached", [False, True], ids=["files", "decoded-cache"])
def test_bench_classifier_epochs_on_real_files(
    benchmark: Any, real_layout: Path, tmp_path: Path, cached: bool
) -> None:
    values: dict[str, Any] = {
        "data": str(real_layout),
        "backbone": "resnet18",
        "image_size": 128,
        "batch_size": 16,
        "epochs": 3,
        "num_workers": 0,
        "early_stopping_patience": None,
    }
    if cached:
        values["image_cache"] = str(tmp_path / "image-cache")
    runs = iter(range(100))

    def train() -> Any:
        config = parse_config(ClassifierTrainingConfig, values)
        return train_classifier(config, tmp_path / f"run{next(runs)}")

    result = benchmark.pedantic(train, rounds=1, iterations=1)
    later = result.history[1:]
    benchmark.extra_info["first_epoch_images_per_second"] = result.history[0][
        "train_images_per_second"
    ]
    benchmark.extra_info["later_images_per_second"] = round(
        sum(e["train_images_per_second"] for e in later) / len(later), 2
    )
    benchmark.extra_info["first_epoch_data_wait_fraction"] = result.history[0][
        "train_data_wait_fraction"
    ]
    benchmark.extra_info["later_data_wait_fraction"] = round(
        max(e["train_data_wait_fraction"] for e in later), 4
    )
