"""Loading never runs code from a file; trusted old files convert once."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from typer.testing import CliRunner

from doll_core.checkpoint import load_classifier
from doll_core.cli import app
from doll_core.data.chexpert_format import CHEXPERT_HEADER
from doll_core.data.imageio import ImageReadError, write_jsrt_img
from doll_core.data.paths import contained_path
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError
from doll_core.labels.store import LabelStore
from doll_core.payloads import safe_torch_load
from doll_core.registry import get_registry

runner = CliRunner()


class _RunsCode:
    """Unpickling this object would create a file: the classic pickle attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    for load in (
        lambda p: safe_torch_load(p, "weights file"),
        load_classifier,
        lambda p: get_registry().create("backbone", "resnet18", weights=str(p)).build(14, 1),
    ):
        with pytest.raises(DollError, match=r"convert-weights .* --trusted"):
            load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_trusted_whole_model_file_converts_into_loadable_weights(tmp_path: Path) -> None:
    model = torchvision.models.resnet18(weights=None)
    torch.save({"model": model, "epoch": 7, "note": "old format"}, tmp_path / "old.pt")
    with pytest.raises(DollError, match="pickled Python objects"):
        get_registry().create("backbone", "resnet18", weights=str(tmp_path / "old.pt")).build(14, 3)

    refused = runner.invoke(
        app, ["convert-weights", str(tmp_path / "old.pt"), str(tmp_path / "new.pt")]
    )
    assert refused.exit_code == 2 and "--trusted" in refused.output
    assert not (tmp_path / "new.pt").exists()

    done = runner.invoke(
        app, ["convert-weights", str(tmp_path / "old.pt"), str(tmp_path / "new.pt"), "--trusted"]
    )
    assert done.exit_code == 0, done.output
    assert "dropped epoch, note" in done.output
    state = safe_torch_load(tmp_path / "new.pt", "weights file")
    assert set(state) == set(model.state_dict())
    classifier = get_registry().create("backbone", "resnet18", weights=str(tmp_path / "new.pt"))
    built = classifier.build(14, 3)
    assert torch.equal(built.conv1.weight, model.conv1.weight)

    again = runner.invoke(
        app, ["convert-weights", str(tmp_path / "old.pt"), str(tmp_path / "new.pt"), "--trusted"]
    )
    assert again.exit_code == 2 and "exists" in again.output


def test_text_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DollError, match="not a readable DoLL weights file"):
        safe_torch_load(tmp_path / "text.pt", "weights file")
    with pytest.raises(DollError, match="weights file not found"):
        safe_torch_load(tmp_path / "absent.pt", "weights file")


# -- paths named in data files stay inside their root ------------------------------------


def test_contained_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    assert contained_path(root, "inside/a.png") == root / "inside" / "a.png"
    assert contained_path(root, "inside\\a.png") == root / "inside" / "a.png"
    (root / "link-in").symlink_to(root / "inside")
    assert contained_path(root, "link-in/a.png") == root / "link-in" / "a.png"
    (root / "link-out").symlink_to(tmp_path)
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    cases = {
        "inside/a\x00.png": "NUL character",
        "loop-a/a.png": "cannot resolve",
        "../secret.png": "climbs out",
        "inside/../../secret.png": "climbs out",
        "/etc/passwd": "absolute path",
        "C:\\Windows\\win.ini": "absolute path",
        "link-out/secret.png": "through a symbolic link",
    }
    for relative, reason in cases.items():
        with pytest.raises(ImageReadError, match=reason):
            contained_path(root, relative)


def test_a_csv_path_out_of_the_root_is_a_skipped_row(tmp_path: Path) -> None:
    base = tmp_path / "data" / "CheXpert-v1.0-small"
    (base / "train/p1/s1").mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 90, dtype=np.uint8)).save(base / "train/p1/s1/v.jpg")
    Image.fromarray(np.full((16, 16), 90, dtype=np.uint8)).save(tmp_path / "private.jpg")
    labels = ["1.0"] + [""] * 13
    with (base / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CHEXPERT_HEADER)
        for path in ("CheXpert-v1.0-small/train/p1/s1/v.jpg", "../../private.jpg",
                     str(tmp_path / "private.jpg")):  # fmt: skip
            writer.writerow([path, "Female", "60", "Frontal", "AP", *labels])
    reader = get_registry().create("dataset", "chexpert", root=tmp_path / "data", size=16)
    results = [reader[i] for i in range(len(reader))]
    assert [isinstance(r, SkippedSample) for r in results] == [False, True, True]
    assert "climbs out" in reader.skipped[0].reason
    assert "absolute path" in reader.skipped[1].reason
    strict = get_registry().create(
        "dataset", "chexpert", root=tmp_path / "data", size=16, on_error="fail"
    )
    with pytest.raises(ImageReadError, match="climbs out"):
        strict[1]


def test_a_manifest_naming_a_file_outside_the_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"config_hash": "x", "total_shards": 1}))
    (store / "manifest.json").write_text(json.dumps({
        "config_hash": "x", "complete": True, "images": {"a": {"shard": 0}},
        "shards": {"0": {"file": "../elsewhere.pt", "sha256": "0"}},
    }))  # fmt: skip
    with pytest.raises(DollError, match=r"manifest names shard '\.\./elsewhere\.pt'.*climbs out"):
        LabelStore(store).labels("a")


# -- a full disk is one clear message ----------------------------------------------------


def test_a_full_disk_is_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import doll_core.phantom.writer as writer

    def full(array: Any, path: Path) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        except OSError:  # torch.save raises a RuntimeError while handling it
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    monkeypatch.setattr(writer, "_save_png", full)
    command = ["data", "phantom", "--out", str(tmp_path / "p"), "--n-train", "1",
               "--n-valid", "1", "--n-organs", "0", "--n-infection", "0"]  # fmt: skip
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    assert "the disk is full while writing" in result.output and ".png" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "p").exists()  # the phantom is written aside and renamed at the end


# -- listed files that are symbolic links out of the dataset root -----------------------


def _save_png(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def _segfolder_layout(root: Path, stem: str) -> tuple[Path, Path]:
    return root / "images" / f"{stem}.png", root / "masks" / "lungs" / f"{stem}.png"


def _jsrt_layout(root: Path, stem: str) -> tuple[Path, Path]:
    return (
        root / "images" / f"{stem}.IMG",
        root / "scr" / "fold1" / "masks" / "heart" / f"{stem}.gif",
    )


def _covid_layout(root: Path, stem: str) -> tuple[Path, Path]:
    folder = root / "Infection Segmentation Data" / "Train" / "COVID-19"
    return folder / "images" / f"{stem}.png", folder / "infection masks" / f"{stem}.png"


_LISTING_READERS = {
    "segfolder": (_segfolder_layout, {}),
    "jsrt": (_jsrt_layout, {"classes": ["heart"], "image_shape": [8, 8]}),
    "covid-qu-ex": (_covid_layout, {"categories": ["COVID-19"]}),
}


def _write_pair(image: Path, mask: Path) -> None:
    if image.suffix == ".IMG":
        image.parent.mkdir(parents=True, exist_ok=True)
        write_jsrt_img(image, np.full((8, 8), 1000, dtype=np.uint16))
    else:
        _save_png(image, 100)
    mask.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(mask)


@pytest.mark.parametrize("kind", sorted(_LISTING_READERS))
def test_a_listed_file_linking_out_of_the_root_is_a_skipped_sample(
    tmp_path: Path, kind: str
) -> None:
    """Folder-listing readers: an image or mask that is a symbolic link out of the dataset
    is skipped with the containment reason (or stops the run); a link inside still works."""
    layout, options = _LISTING_READERS[kind]
    root, elsewhere = tmp_path / "data", tmp_path / "private"
    for stem in ("a", "b", "c", "d"):
        _write_pair(*layout(root, stem))
    _write_pair(*layout(elsewhere, "b"))
    _write_pair(*layout(elsewhere, "c"))
    image_b, _ = layout(root, "b")
    _, mask_c = layout(root, "c")
    image_d, mask_d = layout(root, "d")
    image_b.unlink()
    image_b.symlink_to(layout(elsewhere, "b")[0])  # an image out of the root
    mask_c.unlink()
    mask_c.symlink_to(layout(elsewhere, "c")[1])  # a mask out of the root
    for inside, original in ((image_d, layout(root, "a")[0]), (mask_d, layout(root, "a")[1])):
        inside.unlink()
        inside.symlink_to(Path("..") / original.relative_to(inside.parent.parent))  # inside
    reader = get_registry().create("dataset", kind, root=root, **options)
    results = [reader[i] for i in range(len(reader))]
    assert [isinstance(r, SkippedSample) for r in results] == [False, True, True, False]
    assert [s.path for s in reader.skipped] == [
        str(image_b.relative_to(root)),
        str(mask_c.relative_to(root)),
    ]
    assert all("leads outside" in s.reason and "symbolic link" in s.reason for s in reader.skipped)
    assert all(str(elsewhere) in s.reason for s in reader.skipped)
    assert float(results[3]["mask"].min()) == 1.0  # the linked mask inside the root was read
    assert all("follow_links = true" in s.reason for s in reader.skipped)  # how to allow it
    strict = get_registry().create("dataset", kind, root=root, on_error="fail", **options)
    with pytest.raises(ImageReadError, match=r"leads outside .* symbolic link"):
        strict[1]
    strict[3]
    # a dataset whose folders link to another disk on purpose: the option reads them all
    trusting = get_registry().create("dataset", kind, root=root, follow_links=True, **options)
    assert not any(isinstance(trusting[i], SkippedSample) for i in range(len(trusting)))


def test_a_file_that_is_no_pytorch_file_is_named_as_such(tmp_path: Path) -> None:
    """A text file or zeroed bytes given as weights: not "pickled Python objects" (which
    would advise converting it), but no PyTorch file at all."""
    from doll_core.payloads import safe_torch_load

    for name, data in (("notes.txt", b"lr = 0.1\n"), ("zeroed.pt", bytes(64)), ("empty.pt", b"")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DollError, match="it is not a PyTorch file") as caught:
            safe_torch_load(path, "weights file")
        assert "pickled" not in str(caught.value) and str(path) in str(caught.value)
