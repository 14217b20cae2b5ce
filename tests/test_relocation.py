"""Relative paths inside records (``doll_core.relocation``): what is named how, and a label
store tree that is moved still fuses and reads from its own files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel

from doll_core.configuration import parse_config
from doll_core.errors import DollError
from doll_core.labels.combine import fuse_stores
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.dataset import LabeledImages
from doll_core.labels.generate import generate_labels
from doll_core.labels.store import CLASSIFIER_AUROC, CONFIG, LabelStore
from doll_core.relocation import (
    config_record,
    located,
    portable,
    recorded_path,
    relocatable_within,
    same_record,
)


def test_paths_inside_a_tree_are_relative_to_the_record_and_others_absolute(
    tmp_path: Path,
) -> None:
    tree, outside = tmp_path / "run", tmp_path / "data" / "images"
    holder, target = tree / "stages" / "b", tree / "stages" / "a" / "best.pt"
    assert recorded_path(target, holder) == str(target)  # no tree declared
    with relocatable_within(tree):
        assert recorded_path(target, holder) == os.path.join("..", "a", "best.pt")
        assert recorded_path(outside, holder) == str(outside)
        assert recorded_path(target, tmp_path / "elsewhere") == str(target)  # holder outside
        with relocatable_within(tmp_path / "data"):  # the enclosing tree stays declared
            assert recorded_path(target, holder) == os.path.join("..", "a", "best.pt")
            assert recorded_path(outside, tmp_path / "data") == "images"
        assert recorded_path(outside, tmp_path / "data") == str(outside)
        assert located(recorded_path(target, holder), holder) == target
    assert recorded_path(target, holder) == str(target)  # the declaration ended


def test_a_relative_argument_is_recorded_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert recorded_path("data/x", "somewhere") == str(tmp_path / "data" / "x")


def test_portable_rewrites_only_absolute_paths_inside_a_tree(tmp_path: Path) -> None:
    tree = tmp_path / "run"
    payload = {
        "folder": str(tree / "stages" / "x"),
        "nested": [{"store": str(tree / "stages" / "y" / "labels")}, 3, None],
        "explainer": "saliency",
        "relative": "stages/z",
        "outside": str(tmp_path / "data"),
        "prefix_only": str(tmp_path / "run-2" / "x"),  # shares the tree's name as a prefix
    }
    assert portable(payload, tree) == payload  # no tree declared: unchanged
    with relocatable_within(tree):
        assert portable(payload, tree) == {
            **payload,
            "folder": os.path.join("stages", "x"),
            "nested": [{"store": os.path.join("stages", "y", "labels")}, 3, None],
        }


def test_located_reads_relative_and_absolute_records(tmp_path: Path) -> None:
    assert located("../a/best.pt", tmp_path / "b") == tmp_path / "a" / "best.pt"
    assert located(str(tmp_path / "x"), "/elsewhere") == tmp_path / "x"


class _Paths(BaseModel):
    data: Path
    classifiers: tuple[Path, ...]
    init_path: Path | None = None
    name: str = "x"


def test_a_config_record_names_its_path_fields_and_compares_across_formats(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "run"
    config = _Paths(data=tree / "phantom", classifiers=(tree / "c" / "best.pt",))
    holder = tree / "stage"
    with relocatable_within(tree):
        record = config_record(config, holder)
        assert record == {
            "data": os.path.join("..", "phantom"),
            "classifiers": [os.path.join("..", "c", "best.pt")],
            "init_path": None,
            "name": "x",
        }
        older = {**record, "data": str(tree / "phantom")}  # written before relative paths
        assert same_record(older, record, config, holder) == record
        changed = {**record, "data": str(tmp_path / "other")}
        assert same_record(changed, record, config, holder) != record


# -- a moved store tree ---------------------------------------------------------------------


def _store(tree: Path, checkpoint: Path, name: str) -> Path:
    values = {
        "data": str(tree / "phantom"),
        "classifiers": [str(checkpoint)],
        "explainer": "saliency",
        "label_size": 8,
        "limit": 6,
        "shard_size": 4,
        "device": "cpu",
    }
    generate_labels(parse_config(LabelGenerationConfig, values), tree / name)
    return tree / name


def test_a_moved_store_tree_fuses_by_its_recorded_auroc_and_reads_its_own_images(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    """Stores made inside a declared tree, the tree moved and its checkpoints deleted:
    ``auc_weighted`` fusion takes the AUROCs the stores recorded (the same labels as in
    place), and the fused store reads the moved images; a store made before DoLL recorded
    AUROCs reads them from its checkpoints, and says which one is gone."""
    tree = tmp_path / "tree"
    shutil.copytree(small_phantom, tree / "phantom")
    checkpoints = []
    for index, checkpoint in enumerate(tiny_checkpoints):
        checkpoints.append(tree / f"classifier{index}" / "best.pt")
        checkpoints[-1].parent.mkdir()
        shutil.copyfile(checkpoint, checkpoints[-1])
    with relocatable_within(tree):
        stores = [_store(tree, c, f"store{i}") for i, c in enumerate(checkpoints)]
        fuse_stores(stores, "auc_weighted", tree / "fused")
    in_place = {p.name: p.read_bytes() for p in sorted((tree / "fused").glob("shard-*.pt"))}
    assert str(tree) not in (tree / "fused" / CONFIG).read_text()

    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(tree, moved)
    for index in range(len(checkpoints)):
        (moved / f"classifier{index}" / "best.pt").unlink()
    fuse_stores([moved / "store0", moved / "store1"], "auc_weighted", moved / "again")
    again = {p.name: p.read_bytes() for p in sorted((moved / "again").glob("shard-*.pt"))}
    assert again == in_place
    fused = LabelStore(moved / "again")
    assert fused.data_root == moved / "phantom"
    assert fused.classifier_paths == [moved / f"classifier{i}" / "best.pt" for i in (0, 1)]
    images = LabeledImages(moved / "again", size=16)
    assert len(images) == 6 and images[0]["image"].shape[-1] == 16

    older = moved / "store0" / CONFIG  # as DoLL wrote it before it recorded AUROCs
    record = json.loads(older.read_text())
    del record[CLASSIFIER_AUROC]
    older.write_text(json.dumps(record))
    with pytest.raises(DollError, match=r"classifier0.best\.pt"):
        fuse_stores([moved / "store0", moved / "store1"], "auc_weighted", moved / "third")
    shutil.copyfile(tiny_checkpoints[0], moved / "classifier0" / "best.pt")
    fuse_stores([moved / "store0", moved / "store1"], "auc_weighted", moved / "fourth")
    fourth = {p.name: p.read_bytes() for p in sorted((moved / "fourth").glob("shard-*.pt"))}
    assert fourth == in_place
