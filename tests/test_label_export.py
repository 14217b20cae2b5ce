"""``doll labels export``: a label store as CheXlocalize JSON and PNG masks, read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from doll_core.atomic import atomic_write_text
from doll_core.cli import app
from doll_core.data.imageio import read_mask
from doll_core.groundtruth import read_ground_truth
from doll_core.groundtruth.names import CHEXLOCALIZE_TASKS
from doll_core.groundtruth.rle import encode_mask
from doll_core.labels.export import binary_label
from doll_core.labels.store import (
    CONFIG,
    ShardContent,
    build_manifest,
    map_statistics,
    write_manifest,
    write_shard,
)
from doll_core.observations import OBSERVATIONS

runner = CliRunner()
FIRST = "CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg"
SECOND = "CheXpert-v1.0/valid/patient64542/study1/view1_frontal.jpg"


def make_store(path: Path, labels: dict[str, dict[str, np.ndarray]]) -> Path:
    """A one-shard label store written by the store's own writer: ``{id: {observation:
    uint8 [R, R]}}``."""
    path.mkdir(parents=True)
    ids = list(labels)
    width = max(len(v) for v in labels.values())
    targets = torch.full((len(ids), max(width, 1)), -1, dtype=torch.long)
    maps, offsets = [], [0]
    for row, image_id in enumerate(ids):
        for column, (name, label) in enumerate(labels[image_id].items()):
            targets[row, column] = OBSERVATIONS.index(name)
            maps.append(torch.from_numpy(label))
        offsets.append(len(maps))
    stacked = torch.stack(maps).to(torch.uint8)
    content = ShardContent(
        index=0,
        config_hash="test",
        ids=ids,
        targets=targets,
        maps=stacked,
        offsets=torch.tensor(offsets),
        stats=map_statistics(stacked),
        skipped=[],
    )
    write_shard(path, content)
    config = {"config_hash": "test", "total_shards": 1, "images": len(ids), "label_size": 8}
    atomic_write_text(path / CONFIG, json.dumps(config))
    write_manifest(path, build_manifest(path, "test", 1))
    return path


@pytest.fixture
def labels() -> dict[str, dict[str, np.ndarray]]:
    ramp = np.tile(np.linspace(0, 255, 8).round().astype(np.uint8), (8, 1))  # 0 .. 255
    blob = np.zeros((8, 8), dtype=np.uint8)
    blob[2:5, 3:7] = 200
    return {
        FIRST: {"Cardiomegaly": ramp, "Lung Opacity": blob},
        SECOND: {"Pneumonia": ramp.T.copy()},  # not a CheXlocalize task
    }


def test_chexlocalize_export_reads_back_identical(
    tmp_path: Path, labels: dict[str, dict[str, np.ndarray]]
) -> None:
    store = make_store(tmp_path / "store", labels)
    out = tmp_path / "labels.json"
    result = runner.invoke(app, ["labels", "export", str(store), str(out)])
    assert result.exit_code == 0, result.output
    assert "3 masks of 2 images" in result.stdout
    written = json.loads(out.read_text())
    first = written["patient64541_study1_view1_frontal"]
    assert set(CHEXLOCALIZE_TASKS) <= set(first) and "Airspace Opacity" in first
    assert first["Cardiomegaly"]["size"] == [8, 8] and isinstance(
        first["Cardiomegaly"]["counts"], str
    )
    assert coco_mask.area(first["Edema"]) == 0  # every task, empty where there is no map
    truth = read_ground_truth(f"chexlocalize:{out}")
    for store_id, maps in labels.items():
        image_id = store_id.split("/", 2)[2].rsplit(".", 1)[0].replace("/", "_")
        for name, label in maps.items():
            expected = (label / 255 >= 0.5) & (label > 0)
            assert np.array_equal(truth.mask(image_id, name), expected)
    assert int(truth.mask("patient64541_study1_view1_frontal", "Cardiomegaly").sum()) == 4 * 8


def test_export_at_native_sizes_and_as_png(
    tmp_path: Path, labels: dict[str, dict[str, np.ndarray]]
) -> None:
    store = make_store(tmp_path / "store", labels)
    sizes = tmp_path / "gt.json"  # native sizes of one of the two images
    sizes.write_text(
        json.dumps(
            {"patient64541_study1_view1_frontal": {"Edema": encode_mask(np.zeros((12, 20), bool))}}
        )
    )
    out = tmp_path / "native.json"
    result = runner.invoke(
        app,
        [
            "labels",
            "export",
            str(store),
            str(out),
            "--size-from",
            f"chexlocalize:{sizes}",
            "--threshold",
            "0.6",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 images left out" in result.stderr and SECOND in result.stderr
    truth = read_ground_truth(f"chexlocalize:{out}")
    assert truth.ids == ["patient64541_study1_view1_frontal"]
    assert truth.size("patient64541_study1_view1_frontal") == (12, 20)
    for name, label in labels[FIRST].items():
        expected = binary_label(torch.from_numpy(label), (12, 20), 0.6)
        assert np.array_equal(truth.mask("patient64541_study1_view1_frontal", name), expected)
    folder = tmp_path / "png"
    result = runner.invoke(app, ["labels", "export", str(store), str(folder), "--format", "png"])
    assert result.exit_code == 0, result.output
    written = folder / "patient64542_study1_view1_frontal" / "pneumonia.png"
    assert np.array_equal(read_mask(written), (labels[SECOND]["Pneumonia"] / 255 >= 0.5))
    assert sorted(p.name for p in (folder / "patient64541_study1_view1_frontal").iterdir()) == [
        "cardiomegaly.png",
        "lung_opacity.png",
    ]
    bad = runner.invoke(app, ["labels", "export", str(store), str(out), "--format", "tiff"])
    assert bad.exit_code == 2 and "unknown export format 'tiff'" in bad.stderr


def test_labels_score_against_ground_truth_is_export_then_compare(
    tmp_path: Path, labels: dict[str, dict[str, np.ndarray]]
) -> None:
    store = make_store(tmp_path / "store", labels)
    heart = np.zeros((12, 20), dtype=bool)
    heart[:, 12:] = True  # the right of the image, where the ramp is high
    opacity = np.zeros((12, 20), dtype=bool)
    opacity[0:2, 0:3] = True  # away from the blob: IoU 0, a miss
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "patient64541_study1_view1_frontal": {
                    "Cardiomegaly": encode_mask(heart),
                    "Airspace Opacity": encode_mask(opacity),
                }
            }
        )
    )
    spec = f"chexlocalize:{gt}"
    scored = runner.invoke(app, ["labels", "score", str(store), "--ground-truth", spec])
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.stdout)
    assert (report["images"], report["unmatched"], report["maps"]) == (1, 1, 2)
    per = report["per_observation"]
    assert per["Cardiomegaly"]["hit_rate"] == 1.0 and per["Lung Opacity"]["hit_rate"] == 0.0
    assert per["Lung Opacity"]["chexlocalize_miou"] == 0.0
    exported = tmp_path / "labels.json"
    runner.invoke(app, ["labels", "export", str(store), str(exported), "--size-from", spec])
    compared = runner.invoke(app, ["localization", "compare", str(exported), spec, "--json"])
    assert compared.exit_code == 0, compared.output
    miou = json.loads(compared.stdout)["per_observation"]
    for name in ("Cardiomegaly", "Lung Opacity"):
        assert per[name]["chexlocalize_miou"] == pytest.approx(miou[name]["miou"], abs=1e-12)
    assert 0 < per["Cardiomegaly"]["chexlocalize_miou"] < 1
    both = runner.invoke(
        app, ["labels", "score", str(store), "--ground-truth", spec, "--data", "x"]
    )
    assert both.exit_code == 2 and "one of them" in both.stderr


def test_png_export_replaces_an_earlier_one_whole_and_keeps_it_on_failure(
    tmp_path: Path, labels: dict[str, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29, items 1 and 7: no stale mask of an earlier export, no 0-byte mask when the
    disk fills, no write through a link planted in the folder, no user folder emptied."""
    import errno

    from PIL import Image

    store = make_store(tmp_path / "store", labels)
    folder = tmp_path / "png"
    assert (
        runner.invoke(
            app, ["labels", "export", str(store), str(folder), "--format", "png"]
        ).exit_code
        == 0
    )
    stale = folder / "patient00001_study1_view1_frontal" / "edema.png"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier export's mask")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    planted = folder / "patient64542_study1_view1_frontal" / "pneumonia.png"
    planted.unlink()
    planted.symlink_to(notes)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.png")}
    saved = Image.Image.save
    calls = []

    def full_disk(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        calls.append(fp)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", full_disk)
    failed = runner.invoke(app, ["labels", "export", str(store), str(folder), "--format", "png"])
    assert failed.exit_code == 2 and "nothing was changed there" in failed.stderr
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.png")} == before
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "png", "store"]
    monkeypatch.setattr(Image.Image, "save", saved)
    result = runner.invoke(app, ["labels", "export", str(store), str(folder), "--format", "png"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not planted.is_symlink()
    assert notes.read_text() == "my notes\n"
    assert np.array_equal(read_mask(planted), (labels[SECOND]["Pneumonia"] / 255 >= 0.5))
    assert json.loads((folder / "export.json").read_text())["masks"] == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("text")
    refused = runner.invoke(app, ["labels", "export", str(store), str(mine), "--format", "png"])
    assert refused.exit_code == 2 and "not a DoLL PNG export" in refused.stderr
    assert (mine / "thesis.tex").read_text() == "text"


def test_an_unusable_export_path_is_one_line(
    tmp_path: Path, labels: dict[str, dict[str, np.ndarray]]
) -> None:
    store = make_store(tmp_path / "store", labels)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    cases = [
        (["labels", "export", str(store), str(a_file / "labels.json")], "in the way"),
        (["labels", "export", str(store), str(folder)], "a folder is where a file"),
        (["labels", "export", str(store), str(a_file), "--format", "png"], "is a file"),
    ]
    for argv, expected in cases:
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert expected in result.stderr and "Traceback" not in result.output
    assert a_file.read_text() == "x" and not list(folder.iterdir())
