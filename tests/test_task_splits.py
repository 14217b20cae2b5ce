"""Splits of downstream segmentation tasks: by image, by patient, from a split file; a
patient never crosses splits, and a budget larger than the training split is refused
before any stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from experiments_helpers import tiny_on_data
from PIL import Image
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.errors import DollError
from doll_core.segmentation.splits import SplitSpec, seeded_split, split_dataset

runner = CliRunner()


class Ids:
    """A dataset of ids only (what a split reads)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def sample_id(self, index: int) -> str:
        return self.ids[index]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_random_split_is_the_seeded_draw_by_image_it_always_was() -> None:
    ids = [f"img{i:02d}" for i in range(20)]
    split = split_dataset(Ids(ids), SplitSpec())
    rest, test = seeded_split(20, 0.2, 0)
    order, held = seeded_split(len(rest), 0.2, 1)
    assert split.indices == {
        "train": [rest[i] for i in order],
        "valid": [rest[i] for i in held],
        "test": test,
    }
    assert split.sizes() == {"train": 13, "valid": 3, "test": 4}
    assert split.patients is None


def test_a_patient_split_keeps_every_patient_on_one_side(tmp_path: Path) -> None:
    # 12 patients with 1..3 images each: image stems p<patient>_<view>
    ids = [f"p{p:02d}_{v}" for p in range(12) for v in range(1 + p % 3)]
    spec = SplitSpec(mode="patients", patient_pattern=r"^(p\d+)_")
    split = split_dataset(Ids(ids), spec)
    sides = {name: {i.split("_")[0] for i in split.ids[name]} for name in split.ids}
    assert not (sides["train"] & sides["valid"] or sides["train"] & sides["test"])
    assert not sides["valid"] & sides["test"]
    assert sum(split.sizes().values()) == len(ids)
    assert split.sizes()["test"] >= 0.2 * len(ids)  # test filled to its share of images
    assert split_dataset(Ids(list(reversed(ids))), spec).digest() == split.digest()
    # the same patients from a CSV give the same split
    table = write_csv(tmp_path / "p.csv", "image,patient", [f"{i}.png,{i[:3]}" for i in ids])
    from_file = split_dataset(Ids(ids), SplitSpec(mode="patients", patient_file=table))
    assert from_file.ids == split.ids
    assert from_file.summary()["patients"] == {
        name: len(sides[name]) for name in ("train", "valid", "test")
    }


def test_a_split_file_is_followed_and_checked(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d", "e"]
    good = write_csv(
        tmp_path / "s.csv",
        "image,split,patient",
        ["a.png,train,1", "b,Training,1", "c,val,2", "d,TEST,3"],
    )
    split = split_dataset(Ids(ids), SplitSpec(mode="file", split_file=good))
    assert split.ids == {"train": ["a", "b"], "valid": ["c"], "test": ["d"]}
    assert split.left_out == ["e"] and split.summary()["left_out"] == 1
    assert split.summary()["patients"] == {"train": 1, "valid": 1, "test": 1}

    def refused(rows: list[str], header: str = "image,split,patient") -> str:
        path = write_csv(tmp_path / "bad.csv", header, rows)
        with pytest.raises(DollError) as caught:
            split_dataset(Ids(ids), SplitSpec(mode="file", split_file=path), "task lungs")
        return str(caught.value)

    assert "patient '1' has images in both train and test" in refused(["a,train,1", "d,test,1"])
    assert "line 3: no image 'zz'" in refused(["a,train,1", "zz,test,2"])
    assert "listed again (first on line 2)" in refused(["a,train,1", "a.png,test,1"])
    assert "split 'dev' is none of" in refused(["a,dev,1"])
    assert "no 'split' column" in refused(["a,1"], header="image,fold")
    assert "no image column" in refused(["a,train"], header="file,split")


def test_a_monai_datalist_is_a_split_file_and_nnunet_folds_are_refused(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d"]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({
        "training": [{"image": "imagesTr/a.png", "label": "labelsTr/a.png"}, {"image": "b.png"}],
        "validation": [{"image": "c.png"}],
        "test": ["d.png"],
    }))  # fmt: skip
    split = split_dataset(Ids(ids), SplitSpec(mode="file", split_file=datalist))
    assert split.ids == {"train": ["a", "b"], "valid": ["c"], "test": ["d"]}
    folds = tmp_path / "splits_final.json"
    folds.write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]}]))
    with pytest.raises(DollError, match="but no test cases"):
        split_dataset(Ids(ids), SplitSpec(mode="file", split_file=folds))


def test_spec_problems_name_what_is_missing(tmp_path: Path) -> None:
    assert "needs split_file" in SplitSpec(mode="file").problems()[0]
    assert "needs patient_file" in SplitSpec(mode="patients").problems()[0]
    assert "no regex" in SplitSpec(mode="patients", patient_pattern="(").problems()[0]
    missing = SplitSpec(mode="file", split_file=tmp_path / "none.csv").problems()
    assert missing == [f"split_file: file not found: {tmp_path / 'none.csv'}"]
    with pytest.raises(DollError, match="does not match the image id 'x1'"):
        split_dataset(Ids(["p1_0", "x1"]), SplitSpec(mode="patients", patient_pattern=r"^p\d"))


def _organs(root: Path, count: int = 10) -> Path:
    """A segfolder task: ``count`` 32² images of 5 patients (stem ``pN_V``), lung masks."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks" / "lungs").mkdir(parents=True)
    for k in range(count):
        stem = f"p{k // 2}_{k % 2}"
        image = (rng.random((32, 32)) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 4 + k : 14 + k] = 255
        Image.fromarray(mask).save(root / "masks" / "lungs" / f"{stem}.png")
    return root


def _experiment(tmp_path: Path, task_lines: str) -> Path:
    from doll_core.phantom.writer import PhantomSpec, write_phantom

    chest = tmp_path / "chest"
    write_phantom(chest, PhantomSpec(n_train=24, n_valid=8, n_organs=0, n_infection=0, size=64))
    organs = _organs(tmp_path / "organs")
    text = tiny_on_data(chest, organs)
    text = text.replace(f"root = {json.dumps(str(organs))}", f"root = {json.dumps(str(organs))}\n"
                        + task_lines)  # fmt: skip
    path = tmp_path / "exp.toml"
    path.write_text(text.replace('inits = ["random", "classifier", "doll"]', 'inits = ["random"]'))
    return path


def test_a_budget_over_the_training_split_stops_the_run_before_any_stage(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path, 'splits = "patients"\npatient_pattern = "^(p\\\\d+)_"\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(experiment), "--out", str(out),
                                 "--set", "finetune.budgets=[7]"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "task 'organs': budget 7 is larger than its training split of 6 images" in result.output
    assert "random by patient" in result.output
    assert not list((out / "stages").glob("classifier-*"))  # nothing was trained


def test_a_run_with_a_split_file_records_and_reports_its_split(tmp_path: Path) -> None:
    rows = [f"p{k // 2}_{k % 2},{'train' if k < 6 else 'valid' if k < 8 else 'test'},p{k // 2}"
            for k in range(10)]  # fmt: skip
    table = write_csv(tmp_path / "splits.csv", "image,split,patient", rows)
    experiment = _experiment(tmp_path, f'splits = "file"\nsplit_file = {json.dumps(str(table))}\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(experiment), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "split of organs" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["splits"]["organs"]["images"] == {"train": 6, "valid": 2, "test": 2}
    (folder,) = (out / "stages").glob("finetune-*")
    recorded = json.loads((folder / "split.json").read_text())
    assert recorded["ids"]["test"] == ["p4_0", "p4_1"]
    assert "Split of organs: train 6 (3 patients), valid 2 (1 patients), test 2 (1 patients)" in (
        (out / "results.md").read_text()
    )
    # an edited split file is another split: fine-tuning runs again, nothing else does
    swapped = [r.replace("valid", "x").replace("test", "valid").replace("x", "test") for r in rows]
    write_csv(table, "image,split,patient", swapped)
    again = runner.invoke(app, ["run", str(experiment), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert len(list((out / "stages").glob("finetune-*"))) == 2
    assert len(list((out / "stages").glob("classifier-*"))) == 2
    # a patient on both sides stops the run before any stage, naming the patient
    write_csv(table, "image,split,patient", [*rows[:-1], "p4_1,valid,p4"])
    crossed = runner.invoke(app, ["run", str(experiment), "--out", str(tmp_path / "run2")])
    assert crossed.exit_code == 2
    assert "patient 'p4' has images in both valid and test" in crossed.output
