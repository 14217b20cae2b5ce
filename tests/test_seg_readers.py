"""segfolder, jsrt and covid-qu-ex readers: layouts, class handling, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError
from doll_core.registry import get_registry


def _create(kind: str, root: Path, **options: object) -> object:
    return get_registry().create("dataset", kind, root=root, **options)


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def test_segfolder_binary_folders(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((20, 20), 100, np.uint8)).save(tmp_path / "images" / f"{name}.png")
    for cls, top in (("heart", 0), ("lungs", 10)):
        (tmp_path / "masks" / cls).mkdir(parents=True)
        for name in ("a", "b"):
            Image.fromarray(_square(20, top, 0, 10)).save(tmp_path / "masks" / cls / f"{name}.png")
    dataset = _create("segfolder", tmp_path)
    assert dataset.classes == ["heart", "lungs"]
    sample = dataset[0]
    assert sample["id"] == "a" and sample["mask"].shape == (2, 20, 20)
    assert sample["mask"][0, :10, :10].all() and sample["mask"][0].sum() == 100
    assert sample["mask"][1, 10:, :10].all() and sample["mask"][1].sum() == 100
    resized = _create("segfolder", tmp_path, size=10, classes=["lungs"])[1]
    assert resized["image"].shape == (1, 10, 10) and resized["mask"].shape == (1, 10, 10)
    assert resized["mask"].sum() == 25
    with pytest.raises(DollError, match=r"no mask folder for classes \['liver'\]"):
        _create("segfolder", tmp_path, classes=["liver"])


def test_segfolder_index_masks_and_a_missing_mask(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("x", "y"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"{name}.png")
    index = np.zeros((8, 8), np.uint8)
    index[:4] = 1
    index[6:, 6:] = 2
    Image.fromarray(index).save(tmp_path / "masks" / "x.png")
    with pytest.raises(DollError, match="holds index masks; name their classes"):
        _create("segfolder", tmp_path)
    dataset = _create("segfolder", tmp_path, classes=["lung", "nodule"])
    mask = dataset[0]["mask"]
    assert mask[0].sum() == 32 and mask[1].sum() == 4
    skipped = dataset[1]
    assert isinstance(skipped, SkippedSample) and skipped.reason == "no index mask for image 'y'"
    with pytest.raises(DollError, match="no index mask for image 'y'"):
        _create("segfolder", tmp_path, classes=["lung", "nodule"], on_error="fail")[1]
    too_few = _create("segfolder", tmp_path, classes=["lung"])[0]
    assert isinstance(too_few, SkippedSample) and "value 2" in too_few.reason


def test_phantom_organs_through_segfolder(small_phantom: Path) -> None:
    dataset = _create(
        "segfolder", small_phantom / "organs", classes=["lungs", "heart", "clavicles"]
    )
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample["image"].shape == (1, 64, 64) and sample["mask"].shape == (3, 64, 64)
    lungs, heart, clavicles = sample["mask"].mean(dim=(1, 2)).tolist()
    assert 0.12 < lungs < 0.45 and 0.02 < heart < 0.15 and 0.002 < clavicles < 0.05
    assert not (sample["mask"][0].bool() & sample["mask"][1].bool()).any()  # lungs exclude heart


def test_jsrt_reads_the_phantom_scr_layout(small_phantom: Path) -> None:
    dataset = _create("jsrt", small_phantom / "JSRT", size=128)
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample["image"].shape == (1, 128, 128) and sample["mask"].shape == (3, 128, 128)
    assert sample["id"].startswith("JPC")
    # the image is displayed bright where bone is: the heart is brighter than the lungs
    lungs, heart = sample["mask"][0].bool(), sample["mask"][1].bool()
    assert sample["image"][0][heart].mean() > sample["image"][0][lungs].mean()
    organs = _create("jsrt", small_phantom / "JSRT", classes=["left lung", "right lung"], size=128)
    left, right = organs[0]["mask"]
    torch.testing.assert_close(torch.maximum(left, right), sample["mask"][0])
    # the patient's left lung appears on the image's right side
    columns = torch.arange(128).float()
    assert (
        (left.sum(0) * columns).sum() / left.sum()
        > 64
        > (right.sum(0) * columns).sum() / right.sum()
    )
    fold = _create("jsrt", small_phantom / "JSRT", fold="fold2")
    assert len(fold) == 1
    with pytest.raises(DollError, match="unknown classes"):
        _create("jsrt", small_phantom / "JSRT", classes=["liver"])


def test_covid_qu_ex_tasks_and_splits(small_phantom: Path) -> None:
    root = small_phantom / "COVID-QU-Ex"
    train = _create("covid-qu-ex", root, split="train")
    assert len(train) == 6 and train.split == "Train"
    by_category = {}
    for i in range(len(train)):
        sample = train[i]
        by_category.setdefault(sample["category"], []).append(float(sample["mask"].sum()))
    assert set(by_category) == {"COVID-19", "Non-COVID", "Normal"}
    assert all(total > 0 for total in by_category["COVID-19"])
    assert all(total == 0 for total in by_category["Non-COVID"] + by_category["Normal"])
    lungs = _create("covid-qu-ex", root / "Infection Segmentation Data", split="Val", task="lungs")
    assert len(lungs) == 2 and float(lungs[0]["mask"].mean()) > 0.1
    with pytest.raises(DollError, match="task must be one of infection, lungs"):
        _create("covid-qu-ex", root, task="heart")
    with pytest.raises(DollError, match="split must be one of Train, Val, Test"):
        _create("covid-qu-ex", root, split="dev")
