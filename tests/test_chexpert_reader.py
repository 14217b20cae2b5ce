"""The chexpert reader on hand-written CSV rows with known answers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from doll_core.data.chexpert_format import CHEXPERT_HEADER
from doll_core.data.imageio import ImageReadError
from doll_core.data.samples import SkippedSample, collate_samples
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.registry import get_registry

#: CheXpert-v1.0-small/train.csv's first line, verbatim.
REAL_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)
PREFIX = "CheXpert-v1.0-small"
# labels of 14 observations: No Finding blank, then a mix of 1.0 / 0.0 / -1.0 / blank
ROW_A = ["", "1.0", "-1.0", "0.0", "", "1.0", "-1.0", "", "0.0", "1.0", "", "-1.0", "0.0", "1.0"]
ROW_B = ["1.0", "", "", "", "", "", "", "", "", "", "", "", "", "1.0"]


def _write_dataset(root: Path, rows: list[tuple[str, str, list[str]]]) -> Path:
    """Write ``PREFIX/train.csv`` with (patient folder, view, labels) rows and the images."""
    base = root / PREFIX
    base.mkdir(parents=True)
    with (base / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CHEXPERT_HEADER)
        for i, (patient, view, labels) in enumerate(rows):
            relative = f"train/{patient}/study1/view1_{view.lower()}.jpg"
            writer.writerow([f"{PREFIX}/{relative}", "Female", "60", view, "AP", *labels])
            image = base / relative
            image.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.full((40, 32), 40 * (i + 1), dtype=np.uint8)
            Image.fromarray(pixels).save(image)
    return base


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    _write_dataset(
        tmp_path,
        [
            ("patient00001", "Frontal", ROW_A),
            ("patient00002", "Lateral", ROW_B),
            ("patient00003", "Frontal", ROW_B),
        ],
    )
    return tmp_path


def _reader(root: Path, **options: Any) -> Any:
    return get_registry().create("dataset", "chexpert", root=root, size=16, **options)


def test_the_header_is_chexperts_exactly() -> None:
    assert ",".join(CHEXPERT_HEADER) == REAL_HEADER
    assert CHEXPERT_HEADER[5:] == OBSERVATIONS


@pytest.mark.parametrize(
    ("uncertainty", "blank", "labels", "mask"),
    [
        ("ones", "zeros", [0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1], [1] * 14),
        ("zeros", "zeros", [0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1], [1] * 14),
        (
            "ignore",
            "zeros",
            [0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
            [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1],
        ),
        (
            "ones",
            "ignore",
            [0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1],
            [0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1],
        ),
    ],
)
def test_label_policies(
    dataset_root: Path, uncertainty: str, blank: str, labels: list[int], mask: list[int]
) -> None:
    sample = _reader(dataset_root, uncertainty=uncertainty, blank=blank)[0]
    assert sample["labels"].tolist() == labels
    assert sample["label_mask"].tolist() == [bool(m) for m in mask]
    assert sample["labels"].dtype == torch.float32 and sample["label_mask"].dtype == torch.bool


def test_per_observation_uncertainty(dataset_root: Path) -> None:
    # U-Ones for Atelectasis-like choices, U-Zeros for Cardiomegaly, default ignore
    sample = _reader(
        dataset_root,
        uncertainty={"Cardiomegaly": "zeros", "Consolidation": "ones", "default": "ignore"},
    )[0]
    k = OBSERVATIONS.index
    assert sample["labels"][k("Cardiomegaly")] == 0 and sample["label_mask"][k("Cardiomegaly")]
    assert sample["labels"][k("Consolidation")] == 1
    assert not sample["label_mask"][k("Pleural Other")]
    with pytest.raises(DollError, match=r"unknown observations \['Cardiomegally'\]"):
        _reader(dataset_root, uncertainty={"Cardiomegally": "zeros"})
    with pytest.raises(DollError, match="uncertainty policy of 'No Finding' must be one of"):
        _reader(dataset_root, uncertainty="maybe")


def test_images_ids_and_frontal_filter(dataset_root: Path) -> None:
    everything = _reader(dataset_root)
    assert len(everything) == 3
    sample = everything[1]
    assert sample["id"] == f"{PREFIX}/train/patient00002/study1/view1_lateral.jpg"
    assert sample["image"].shape == (1, 16, 16)
    torch.testing.assert_close(sample["image"], torch.full((1, 16, 16), 80 / 255))
    assert everything[0]["image"].shape == (1, 16, 16)
    frontal = _reader(dataset_root, frontal_only=True)
    assert [frontal.sample_id(i).split("/")[2] for i in range(len(frontal))] == [
        "patient00001",
        "patient00003",
    ]
    assert _reader(dataset_root, grayscale=False)[0]["image"].shape == (3, 16, 16)


def test_root_may_be_the_prefix_folder_itself(dataset_root: Path) -> None:
    inner = _reader(dataset_root / PREFIX)
    assert len(inner) == 3
    torch.testing.assert_close(inner[2]["image"], _reader(dataset_root)[2]["image"])


def test_summary_counts_each_label_value(dataset_root: Path) -> None:
    summary = _reader(dataset_root).summary()
    assert (summary["images"], summary["frontal"], summary["lateral"], summary["patients"]) == (
        3,
        2,
        1,
        3,
    )
    assert summary["observations"]["No Finding"] == {
        "positive": 2,
        "negative": 0,
        "uncertain": 0,
        "blank": 1,
    }
    assert summary["observations"]["Cardiomegaly"] == {
        "positive": 0,
        "negative": 0,
        "uncertain": 1,
        "blank": 2,
    }


def test_malformed_csvs_are_named(tmp_path: Path) -> None:
    base = _write_dataset(tmp_path, [("patient00001", "Frontal", ROW_A)])
    text = (base / "train.csv").read_text()
    (base / "train.csv").write_text(text.replace("Pleural Other", "Pleural Others"))
    with pytest.raises(
        DollError, match=r"missing \['Pleural Other'\]; unexpected \['Pleural Others'\]"
    ):
        _reader(tmp_path)
    (base / "train.csv").write_text(text.replace(",-1.0,", ",2.0,", 1))
    with pytest.raises(DollError, match=r"train\.csv, line 2: label '2\.0' is none of"):
        _reader(tmp_path)
    with pytest.raises(DollError, match="CheXpert valid CSV not found"):
        _reader(tmp_path, split="valid")


def _break_files(root: Path) -> None:
    base = root / PREFIX / "train"
    first = base / "patient00001/study1/view1_frontal.jpg"
    first.write_bytes(first.read_bytes()[:200])  # truncated JPEG
    (base / "patient00003/study1/view1_frontal.jpg").unlink()  # missing


def test_bad_files_are_skipped_and_reported(dataset_root: Path) -> None:
    _break_files(dataset_root)
    reader = _reader(dataset_root, on_error="skip")
    results = [reader[i] for i in range(len(reader))]
    assert [isinstance(r, SkippedSample) for r in results] == [True, False, True]
    assert [s.id.split("/")[2] for s in reader.skipped] == ["patient00001", "patient00003"]
    assert "corrupt" in reader.skipped[0].reason
    assert reader.skipped[1].reason == "file not found"
    assert reader.skipped[1].path.endswith("patient00003/study1/view1_frontal.jpg")


def test_bad_files_stop_the_run_when_asked(dataset_root: Path) -> None:
    _break_files(dataset_root)
    reader = _reader(dataset_root, on_error="fail")
    with pytest.raises(ImageReadError, match=r"view1_frontal\.jpg: corrupt.*on_error='skip'"):
        reader[0]
    with pytest.raises(
        DollError, match=r"'on_error': Input should be 'skip' or 'fail', got 'ignore'"
    ):
        _reader(dataset_root, on_error="ignore")


def test_skips_travel_from_worker_processes_in_batches(dataset_root: Path) -> None:
    _break_files(dataset_root)
    loader = DataLoader(
        _reader(dataset_root), batch_size=2, num_workers=2, collate_fn=collate_samples
    )
    batches = list(loader)
    skipped = [s.id.split("/")[2] for batch in batches for s in batch["skipped"]]
    assert skipped == ["patient00001", "patient00003"]
    images = [batch["image"] for batch in batches if "image" in batch]
    assert sum(len(i) for i in images) == 1


def bomb_png(path: Path, side: int = 15000) -> Path:
    """A PNG that declares ``side`` x ``side`` grey pixels and holds a few bytes of them:
    a decompression bomb's header, which is all a reader sees before it decodes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (side + 1) * 4)  # four rows of the declared image
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_is_a_bad_image_like_any_other(dataset_root: Path) -> None:
    first = dataset_root / PREFIX / "train/patient00001/study1/view1_frontal.jpg"
    bomb_png(first)  # a PNG behind a .jpg name: read by content, as every file is
    skipping = _reader(dataset_root, on_error="skip")
    assert isinstance(skipping[0], SkippedSample) and not isinstance(skipping[1], SkippedSample)
    reason = skipping.skipped[0].reason
    assert "15000 x 15000 = 225,000,000 pixels" in reason and "max_image_pixels" in reason
    with pytest.raises(ImageReadError, match="over the decoding limit of 64,000,000"):
        _reader(dataset_root, on_error="fail")[0]
    # the limit is the reader's option: a lower one refuses ordinary files too
    strict = _reader(dataset_root, on_error="skip", max_image_pixels=100)
    assert isinstance(strict[1], SkippedSample)
    assert "32 x 40 = 1,280 pixels" in strict.skipped[-1].reason
    with pytest.raises(DollError, match="max_image_pixels must be >= 1"):
        _reader(dataset_root, max_image_pixels=0)
