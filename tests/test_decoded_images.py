"""Images decoded once (doll_core.data.decoded): a cached image is bit for bit the image read
from its file, a changed file is decoded again, a damaged entry is never used, and several
processes and DataLoader workers fill one cache safely."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from doll_core.configuration import parse_config
from doll_core.data.decoded import (
    DecodedImages,
    attach_image_cache,
    decode_resized,
    read_levels,
    to_unit,
)
from doll_core.data.imageio import read_image, resize_image
from doll_core.data.samples import collate_samples
from doll_core.registry import get_registry
from doll_core.training.classifier import train_classifier
from doll_core.training.config import ClassifierTrainingConfig

FULL_SIZE = Path(__file__).parent / "data" / "real" / "full-size"


def entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.npz"))


def test_a_resized_image_is_rounded_to_its_files_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    eight = tmp_path / "eight.png"
    Image.fromarray((rng.random((40, 50)) * 255).astype(np.uint8)).save(eight)
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray((rng.random((40, 50)) * 65535).astype(np.uint16)).save(sixteen)
    for path, dtype, top in ((eight, np.uint8, 255), (sixteen, np.uint16, 65535)):
        levels, facts = decode_resized(path, grayscale=True, size=(16, 20))
        assert levels.dtype == dtype and levels.shape == (1, 16, 20)
        exact = resize_image(torch.from_numpy(read_image(path)), (16, 20))
        assert torch.equal(to_unit(levels), torch.round(exact * top) / top)
        assert facts.size == (40, 50)
    # at the file's own size an 8-bit file comes back as stored
    native, _ = decode_resized(eight, grayscale=True, size=None)
    assert np.array_equal(native[0], np.asarray(Image.open(eight)))


@pytest.mark.parametrize(
    "name", ["a8ac1969.jpg", "a8ac1969.png", "person346_virus_709.jpeg", "IM-0333-0001.jpeg"]
)
def test_a_cached_real_image_is_bit_for_bit_the_decoded_file(name: str, tmp_path: Path) -> None:
    cache = DecodedImages(tmp_path / "cache")
    path = FULL_SIZE / name
    direct, facts = read_levels(path, grayscale=True, size=(128, 128))
    first, first_facts = read_levels(path, grayscale=True, size=(128, 128), cache=cache)
    again, again_facts = read_levels(path, grayscale=True, size=(128, 128), cache=cache)
    assert (cache.misses, cache.hits) == (1, 1)
    assert torch.equal(direct, first) and torch.equal(direct, again)
    assert facts == first_facts == again_facts
    # another size or channel count is another entry
    read_levels(path, grayscale=False, size=(64, 64), cache=cache)
    assert len(entries(cache.folder)) == 2


def test_a_changed_file_is_decoded_again_and_a_damaged_entry_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(np.full((20, 20), 10, np.uint8)).save(path)
    cache = DecodedImages(tmp_path / "cache")
    assert read_levels(path, grayscale=True, size=(8, 8), cache=cache)[0].max() == 10 / 255
    Image.fromarray(np.full((20, 20), 200, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))  # even a file whose time goes back is a new file
    assert read_levels(path, grayscale=True, size=(8, 8), cache=cache)[0].max() == 200 / 255
    assert cache.misses == 2
    for entry in entries(cache.folder):
        entry.write_bytes(entry.read_bytes()[:40])  # truncated
    image, _ = read_levels(path, grayscale=True, size=(8, 8), cache=cache)
    assert image.max() == 200 / 255 and cache.misses == 3


def test_an_unwritable_cache_costs_speed_not_the_read(tmp_path: Path) -> None:
    path = FULL_SIZE / "a8ac1969.png"
    blocker = tmp_path / "cache"
    blocker.mkdir()
    (blocker / "readonly").write_text("")
    cache = DecodedImages(blocker)
    os.chmod(blocker, 0o500)
    try:
        image, _ = read_levels(path, grayscale=True, size=(32, 32), cache=cache)
    finally:
        os.chmod(blocker, 0o700)
    assert torch.equal(image, read_levels(path, grayscale=True, size=(32, 32))[0])


def _fill(folder: str, paths: list[str]) -> list[bytes]:
    cache = DecodedImages(folder)
    return [
        read_levels(p, grayscale=True, size=(96, 96), cache=cache)[0].numpy().tobytes()
        for p in paths
    ]


def test_several_processes_fill_one_cache(tmp_path: Path) -> None:
    paths = [str(p) for p in sorted(FULL_SIZE.iterdir()) if p.suffix != ".md"]
    folder = str(tmp_path / "cache")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_fill, [(folder, paths), (folder, paths[::-1])])
    assert results[0] == results[1][::-1]
    assert len(entries(Path(folder))) == len(paths)
    assert not [p for p in Path(folder).rglob("*") if p.name.startswith(".")]  # no leftovers
    assert _fill(folder, paths) == results[0]


def _csv_layout(root: Path) -> Path:
    """The full-size files as a CheXpert-small layout (the reader every stage knows)."""
    from doll_core.observations import OBSERVATIONS

    base = root / "CheXpert-v1.0-small"
    rows = []
    for k, source in enumerate(sorted(p for p in FULL_SIZE.iterdir() if p.suffix != ".md")):
        for split in ("train", "valid"):
            relative = f"CheXpert-v1.0-small/{split}/patient{k:05d}/study1/view1_frontal.jpg"
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)  # a PNG behind a .jpg name reads as a PNG
            labels = ["1.0" if (k + j) % 3 == 0 else "0.0" for j in range(len(OBSERVATIONS))]
            rows.append((split, f"{relative},Female,60,Frontal,PA," + ",".join(labels)))
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(OBSERVATIONS)
    for split in ("train", "valid"):
        lines = [header] + [row for s, row in rows if s == split]
        (base / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_workers_share_the_cache_and_training_is_unchanged_by_it(tmp_path: Path) -> None:
    data = _csv_layout(tmp_path / "data")
    dataset = get_registry().create("dataset", "chexpert", root=data, split="train", size=64)
    attach_image_cache(Subset(dataset, list(range(len(dataset)))), tmp_path / "loader-cache")
    assert dataset.image_cache is not None
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_samples)
    first = torch.cat([batch["image"] for batch in loader])
    assert len(entries(tmp_path / "loader-cache")) == len(dataset)
    second = torch.cat([batch["image"] for batch in loader])
    assert torch.equal(first, second)

    values: dict[str, Any] = {
        "data": str(data), "backbone": "tiny_cnn", "backbone_params": {"width": 4},
        "image_size": 48, "batch_size": 4, "epochs": 2, "num_workers": 0, "seed": 1,
    }  # fmt: skip
    plain = train_classifier(parse_config(ClassifierTrainingConfig, values), tmp_path / "plain")
    cached_config = {**values, "image_cache": str(tmp_path / "train-cache")}
    cached = train_classifier(
        parse_config(ClassifierTrainingConfig, cached_config), tmp_path / "cached"
    )
    assert len(entries(tmp_path / "train-cache")) == 16  # train and valid, once each
    for key, value in plain.model.state_dict().items():
        assert torch.equal(cached.model.state_dict()[key], value), key
