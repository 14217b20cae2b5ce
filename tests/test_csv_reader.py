"""The ``csv`` reader: a user's own CSV of image-level labels (a findings column or label
columns) mapped to the 14 observations, patients, splits, paths, ``doll data inspect`` and
a short classifier training on it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.configuration import parse_config
from doll_core.data.samples import SkippedSample
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.registry import get_registry
from doll_core.training.classifier import train_classifier
from doll_core.training.config import ClassifierTrainingConfig
from doll_plugins.datasets.csv_labels import CsvLabels

runner = CliRunner()

FINDINGS = {
    "Effusion": "Pleural Effusion",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "normal": "No Finding",
    "Pneumonia with effusion": ["Pneumonia", "Pleural Effusion"],
}
#: a findings CSV: a finding the table does not know (Hernia), an empty cell, one finding
#: in another case, one finding standing for two observations
FINDINGS_CSV = """path,patient,findings,site
img/a.png,P1,Effusion|Mass,north
img/b.png,P1,normal,north
img/c.png,P2,Hernia| effusion ,south
img/d.png,P3,,south
img/e.png,P4,Pneumonia with effusion,north
"""


def _write(root: Path, text: str, name: str = "labels.csv", images: str = ".") -> Path:
    """``text`` as ``root/name`` and a tiny grey PNG for every path of its first column."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
    for k, line in enumerate(text.splitlines()[1:]):
        image = root / images / line.split(",")[0]
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 24), 30 + 7 * k % 200, dtype=np.uint8)).save(image)
    return root


def _labels(dataset: CsvLabels, index: int) -> dict[str, float | None]:
    labels, mask = dataset.label_arrays(index)
    return {
        n: (float(v) if m else None) for n, v, m in zip(OBSERVATIONS, labels, mask, strict=True)
    }


def _finding_reader(root: Path, **options: Any) -> CsvLabels:
    return CsvLabels(root, finding_column="findings", findings=FINDINGS, patient_column="patient",
                     size=16, **options)  # fmt: skip


def test_a_findings_column_maps_to_the_observations_and_leaves_the_rest_unlabelled(
    tmp_path: Path,
) -> None:
    dataset = _finding_reader(_write(tmp_path / "data", FINDINGS_CSV))
    assert [dataset.sample_id(i) for i in range(len(dataset))] == [
        "img/a.png", "img/b.png", "img/c.png", "img/d.png", "img/e.png"
    ]  # fmt: skip
    # labelled: what the table maps to; Lung Opacity (the parent of Lung Lesion and
    # Pneumonia) is not, so it stays unlabelled and the hierarchy leaves it alone
    labelled = ("No Finding", "Lung Lesion", "Pneumonia", "Pleural Effusion")
    negative = {n: (0.0 if n in labelled else None) for n in OBSERVATIONS}
    assert _labels(dataset, 0) == negative | {"Pleural Effusion": 1.0, "Lung Lesion": 1.0}
    assert _labels(dataset, 1) == negative | {"No Finding": 1.0}
    assert _labels(dataset, 2) == negative | {"Pleural Effusion": 1.0}  # case and spaces
    assert _labels(dataset, 3) == negative  # an empty cell is blank: blank = "zeros"
    assert _labels(dataset, 4) == negative | {"Pneumonia": 1.0, "Pleural Effusion": 1.0}
    summary = dataset.summary()
    assert summary["unmapped"] == {"Hernia": 1}
    assert summary["unlabelled"] == [n for n in OBSERVATIONS if n not in labelled]
    assert summary["findings"] == {"Effusion": 1, "Mass": 1, "normal": 1, "Hernia": 1,
                                   "effusion": 1, "Pneumonia with effusion": 1}  # fmt: skip
    assert summary["empty_findings"] == 1
    assert summary["observations"]["Pleural Effusion"] == {
        "positive": 3, "negative": 1, "uncertain": 0, "blank": 1
    }  # fmt: skip
    assert "frontal" not in summary and summary["patients"] == 4
    sample = dataset[0]
    assert not isinstance(sample, SkippedSample)
    assert sample["image"].shape == (1, 16, 16) and sample["id"] == "img/a.png"
    assert sample["label_mask"].tolist() == [v is not None for v in _labels(dataset, 0).values()]


def test_an_empty_findings_cell_is_blank_and_the_blank_policy_decides(tmp_path: Path) -> None:
    root = _write(tmp_path / "data", FINDINGS_CSV)
    ignored = _finding_reader(root, blank="ignore")
    _, mask = ignored.label_arrays(3)
    assert not mask.any()  # not labelled: nothing of the row reaches the loss
    assert ignored.label_arrays(1)[1].sum() == 4  # a row with findings: every labelled one


def test_the_hierarchy_makes_a_labelled_parent_positive_only_when_asked(tmp_path: Path) -> None:
    text = "path,findings\na.png,Mass\nb.png,opacity\n"
    root = _write(tmp_path / "data", text)
    table = {"Mass": "Lung Lesion", "opacity": "Lung Opacity"}
    dataset = CsvLabels(root, finding_column="findings", findings=table, hierarchy=True)
    assert _labels(dataset, 0)["Lung Opacity"] == 1.0 and _labels(dataset, 0)["Lung Lesion"] == 1.0
    assert _labels(dataset, 1)["Lung Lesion"] == 0.0
    flat = CsvLabels(root, finding_column="findings", findings=table)  # the default: no inference
    assert _labels(flat, 0)["Lung Opacity"] == 0.0


def test_another_separator_and_a_gzipped_csv_elsewhere(tmp_path: Path) -> None:
    root = _write(tmp_path / "data", "path,findings\nx/a.png,Effusion;Mass\n", images="pngs")
    outside = tmp_path / "labels.csv.gz"
    outside.write_bytes(gzip.compress((root / "labels.csv").read_bytes()))
    dataset = CsvLabels(root, csv=outside, images="pngs", finding_column="findings",
                        separator=";", findings=FINDINGS)  # fmt: skip
    assert _labels(dataset, 0)["Lung Lesion"] == 1.0 and not dataset.summary()["unmapped"]
    assert not isinstance(dataset[0], SkippedSample)


LABEL_CSV = """Image,Patient,Effusion,Heart,Tube
a.png,1,1,0,
b.png,2,-1.0,1.0,0
c.png,3,0.0,-1,1
"""


def test_label_columns_take_chexpert_codes_and_its_policies(tmp_path: Path) -> None:
    root = _write(tmp_path / "data", LABEL_CSV)
    columns = {"Effusion": "Pleural Effusion", "Heart": "Cardiomegaly", "Tube": "Support Devices"}
    dataset = CsvLabels(root, path_column="Image", label_columns=columns)
    absent = {n: None for n in OBSERVATIONS}
    assert _labels(dataset, 0) == absent | {
        "Pleural Effusion": 1.0, "Cardiomegaly": 0.0, "Support Devices": 0.0  # blank: zeros
    }  # fmt: skip
    assert _labels(dataset, 1) == absent | {
        "Pleural Effusion": 1.0, "Cardiomegaly": 1.0, "Support Devices": 0.0  # U-Ones
    }  # fmt: skip
    strict = CsvLabels(root, path_column="Image", label_columns=columns,
                       uncertainty={"default": "zeros", "Cardiomegaly": "ignore"},
                       blank="ignore")  # fmt: skip
    assert _labels(strict, 0)["Support Devices"] is None
    assert _labels(strict, 1)["Pleural Effusion"] == 0.0
    assert _labels(strict, 2)["Cardiomegaly"] is None
    summary = dataset.summary()
    assert summary["observations"]["Pleural Effusion"] == {
        "positive": 1, "negative": 1, "uncertain": 1, "blank": 0
    }  # fmt: skip
    assert summary["unlabelled"] == [n for n in OBSERVATIONS if n not in columns.values()]
    assert "findings" not in summary and summary["patients"] == "not given (one per image)"


def test_label_columns_read_the_users_words(tmp_path: Path) -> None:
    text = "path,effusion\na.png,Yes\nb.png, no \nc.png,maybe\nd.png,n/a\ne.png,1\n"
    root = _write(tmp_path / "data", text)
    words = {"yes": 1, "NO": 0, "maybe": -1, "n/a": "blank"}
    dataset = CsvLabels(root, label_columns={"effusion": "Pleural Effusion"}, values=words,
                        uncertainty="zeros", blank="ignore")  # fmt: skip
    effusion = [_labels(dataset, i)["Pleural Effusion"] for i in range(len(dataset))]
    assert effusion == [1.0, 0.0, 0.0, None, 1.0]  # CheXpert's codes still read
    (root / "labels.csv").write_text(text + "f.png,perhaps\n")
    with pytest.raises(DollError, match=r"labels\.csv, line 7, column 'effusion': 'perhaps'"):
        CsvLabels(root, label_columns={"effusion": "Pleural Effusion"}, values=words)
    with pytest.raises(DollError, match=r"line 2, column 'effusion': 'Yes' is not a label"):
        CsvLabels(root, label_columns={"effusion": "Pleural Effusion"})
    with pytest.raises(DollError, match=r"values: 'yes' must map to 1, 0, -1 or 'blank'"):
        CsvLabels(root, label_columns={"effusion": "Pleural Effusion"}, values={"yes": 2})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "no labels; give either finding_column and findings"),
        ({"finding_column": "findings"}, "finding_column needs the other"),
        ({"findings": FINDINGS, "finding_column": "findings", "label_columns": {"a": "Edema"}},
         "both finding_column and label_columns"),
        ({"finding_column": "findings", "findings": {"Mass": "Lung Nodule"}},
         r"findings\['Mass'\]: 'Lung Nodule' is not an observation; did you mean 'Lung "
         r"Lesion'.*the observations are: No Finding, "),
        ({"label_columns": {"a": "Pleural effusion"}},
         r"label_columns\['a'\]: 'Pleural effusion' is not an observation; did you mean "
         r"'Pleural Effusion'"),
        ({"label_columns": {"a": "Edema", "b": "Edema"}}, "give one column per observation"),
        ({"finding_column": "findings", "findings": FINDINGS, "split_fractions": {"train": 0.5}},
         "split_fractions must sum to 1"),
        ({"finding_column": "findings", "findings": FINDINGS, "split_fractions": {}},
         "split_fractions must be a table"),
        ({"finding_column": "findings", "findings": FINDINGS, "values": {"yes": 1}},
         "values is for label_columns"),
        ({"finding_column": "findings", "findings": FINDINGS, "split": "validation"},
         "split must be one of all, train, valid, test"),
        ({"finding_column": "nothing", "findings": FINDINGS}, r"lacks the column\(s\) \['nothing'"),
        ({"finding_column": "findings", "findings": FINDINGS, "patient_column": "patient",
          "split": "valid"}, r"split 'valid' holds no images: dividing 4 patients \(patients"),
    ],
)  # fmt: skip
def test_options_that_cannot_work_are_refused_by_name(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    root = _write(tmp_path / "data", FINDINGS_CSV)
    with pytest.raises(DollError, match=message):
        CsvLabels(root, **options)


def test_a_split_column_is_honoured_and_no_patient_crosses_it(tmp_path: Path) -> None:
    text = "path,patient,findings,group\na.png,P1,Mass,train\nb.png,P1,,train\n" \
           "c.png,P2,Effusion,valid\nd.png,P3,,test\n"  # fmt: skip
    root = _write(tmp_path / "data", text)
    options = {"finding_column": "findings", "findings": FINDINGS, "patient_column": "patient",
               "split_column": "group"}  # fmt: skip
    train = CsvLabels(root, split="train", **options)
    assert [train.sample_id(i) for i in range(len(train))] == ["a.png", "b.png"]
    summary = train.summary()
    assert summary["patients"] == 1 and summary["split"] == "train"
    assert summary["patients_per_split"] == {"train": 1, "valid": 1, "test": 1}
    assert summary["images_per_split"] == {"train": 2, "valid": 1, "test": 1}
    assert len(CsvLabels(root, **options)) == 4  # split = "all"
    with pytest.raises(DollError, match=r"split 'validation' is not in the column 'group'.*"
                       r"it holds train, valid, test"):  # fmt: skip
        CsvLabels(root, split="validation", **options)
    (root / "labels.csv").write_text(text + "e.png,P2,,test\n")
    with pytest.raises(DollError, match=r"patient 'P2' is in split 'valid' \(line 4\) and in "
                       r"split 'test' \(line 6\)"):  # fmt: skip
        CsvLabels(root, **options)


def test_a_patient_split_by_seed_keeps_patients_together_and_is_reproducible(
    tmp_path: Path,
) -> None:
    rows = [f"{p}_{k}.png,P{p},Mass" for p in range(40) for k in range(3)]
    root = tmp_path / "data"
    root.mkdir()
    (root / "labels.csv").write_text("path,patient,findings\n" + "\n".join(rows) + "\n")
    options = {"finding_column": "findings", "findings": FINDINGS, "patient_column": "patient"}

    def patients(split: str, seed: int = 0) -> set[str]:
        dataset = CsvLabels(root, split=split, split_seed=seed, **options)
        ids = [dataset.sample_id(i) for i in range(len(dataset))]
        assert all(f"{i.split('_')[0]}_{k}.png" in ids for i in ids for k in range(3))
        return {i.split("_")[0] for i in ids}

    splits = {name: patients(name) for name in ("train", "valid", "test")}
    assert sum(len(s) for s in splits.values()) == 40
    assert not (splits["train"] & splits["valid"] or splits["train"] & splits["test"]
                or splits["valid"] & splits["test"])  # fmt: skip
    assert splits["valid"] and splits["test"] and len(splits["train"]) > 20
    assert patients("valid") == splits["valid"]  # the same patients every time
    assert patients("valid", seed=1) != splits["valid"]
    summary = CsvLabels(root, **options).summary()
    assert summary["patients_per_split"] == {name: len(s) for name, s in splits.items()}
    assert summary["images_per_split"] == {name: 3 * len(s) for name, s in splits.items()}
    halves = CsvLabels(root, split="b", split_fractions={"a": 0.5, "b": 0.5}, **options)
    assert 0 < len(halves) < 120 and len(halves) % 3 == 0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../outside.png", "climbs out of the images folder"),
        ("/etc/passwd", "is absolute"),
        ("C:\\x.png", "names a drive"),
        ("", "is empty"),
    ],
)
def test_a_path_out_of_the_images_folder_is_refused_with_file_and_line(
    tmp_path: Path, path: str, message: str
) -> None:
    root = _write(tmp_path / "data", "path,findings\na.png,Mass\n")
    (root / "labels.csv").write_text(f"path,findings\na.png,Mass\n{path},Mass\n")
    with pytest.raises(DollError, match=rf"labels\.csv, line 3: the image path .* {message}"):
        CsvLabels(root, finding_column="findings", findings=FINDINGS)


def test_a_repeated_path_is_refused_naming_both_lines(tmp_path: Path) -> None:
    root = _write(tmp_path / "data", "path,findings\na.png,Mass\nb.png,\n")
    (root / "labels.csv").write_text("path,findings\na.png,Mass\nb.png,\n a.png,Effusion\n")
    with pytest.raises(DollError, match=r"lines 2 and 4 both list the image 'a.png'"):
        CsvLabels(root, finding_column="findings", findings=FINDINGS)


def test_a_missing_image_becomes_a_skip_record(tmp_path: Path) -> None:
    root = _write(tmp_path / "data", FINDINGS_CSV)
    (root / "img" / "c.png").unlink()
    dataset = _finding_reader(root)
    skipped = dataset[2]
    assert isinstance(skipped, SkippedSample) and skipped.id == "img/c.png"
    assert dataset.skipped == [skipped] and not isinstance(dataset[3], SkippedSample)
    Image.fromarray(np.zeros((20, 24), dtype=np.uint8)).save(tmp_path / "elsewhere.png")
    link = root / "img" / "d.png"
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere.png")  # a file out of the images folder
    outside = dataset[3]
    assert isinstance(outside, SkippedSample) and "leads outside" in outside.reason


def test_doll_data_inspect_csv_shows_every_splits_patients(tmp_path: Path) -> None:
    root = _write(tmp_path / "data", FINDINGS_CSV)
    options = ["--set", "finding_column=findings", "--set", "patient_column=patient",
               "--set", 'findings={Effusion = "Pleural Effusion", Mass = "Lung Lesion"}',
               "--set", "split_column=site"]  # fmt: skip
    result = runner.invoke(app, ["data", "inspect", "csv", str(root), "--json", *options])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["splits"]["all"]
    assert summary["patients_per_split"] == {"north": 2, "south": 2}
    assert summary["images_per_split"] == {"north": 3, "south": 2}
    assert summary["unmapped"] == {"normal": 1, "Hernia": 1, "Pneumonia with effusion": 1}
    table = runner.invoke(app, ["data", "inspect", "csv", str(root), *options],
                          env={"COLUMNS": "200"})  # fmt: skip
    assert table.exit_code == 0, table.output
    assert '"north": 2, "south": 2' in table.stdout and "patients_per_split" in table.stdout
    assert "Pleural Effusion" in table.stdout
    wrong = runner.invoke(app, ["data", "inspect", "csv", str(root), "--set", "label_columns="
                                '{findings = "Pleural Efusion"}'])  # fmt: skip
    assert wrong.exit_code != 0 and "did you mean 'Pleural Effusion'" in wrong.output


def test_the_registry_builds_it_and_a_classifier_trains_on_it(tmp_path: Path) -> None:
    rows = [f"{p}_{k}.png,P{p},{'Effusion' if p % 2 else 'normal'}"
            for p in range(24) for k in range(2)]  # fmt: skip
    root = _write(tmp_path / "data", "path,patient,findings\n" + "\n".join(rows) + "\n")
    options = {"finding_column": "findings", "patient_column": "patient",
               "findings": {"Effusion": "Pleural Effusion", "normal": "No Finding"}}  # fmt: skip
    assert len(get_registry().create("dataset", "csv", root=root, split="train", **options)) > 0
    config = parse_config(
        ClassifierTrainingConfig,
        {"data": root, "dataset": "csv", "dataset_options": options, "backbone": "tiny_cnn",
         "backbone_params": {"width": 4}, "image_size": 16, "batch_size": 8, "epochs": 1,
         "num_workers": 0, "seed": 0},
    )  # fmt: skip
    result = train_classifier(config, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["history"]) == 1
    assert metrics["history"][0]["val_images"] > 0
    assert result.model is not None


def test_where_reads_only_the_rows_named(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "img").mkdir(parents=True)
    rows = ["path,finding,patient,source"]
    for k in range(6):
        name = f"img/{k}.png"
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / name)
        source = "a" if k < 4 else "b"
        rows.append(f"{name},{'normal' if k % 2 else 'pneumonia'},p{k},{source}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    options = {"finding_column": "finding", "patient_column": "patient",
               "findings": {"normal": "No Finding", "pneumonia": "Pneumonia"}}  # fmt: skip
    only_a = CsvLabels(root, where={"source": "a"}, **options)
    assert [only_a.sample_id(i) for i in range(len(only_a))] == [f"img/{k}.png" for k in range(4)]
    assert only_a.summary()["rows_kept"] == {"source": ["a"]}
    both = CsvLabels(root, where={"source": ["a", " b "]}, **options)
    assert len(both) == 6
    assert len(CsvLabels(root, where={}, **options)) == 6  # an empty table keeps every row
    with pytest.raises(DollError, match="where"):
        CsvLabels(root, where={"source": []}, **options)
