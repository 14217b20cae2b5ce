"""The real radiographs that ship with DoLL (data/real-cxr): their split holds no patient on
two sides, they run through `doll run` as a user's own folders would (a labels CSV, a
mask folder with a split CSV, no conversion script), and nothing reads the shared
development folder."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from doll_core.cli import app

REPO = Path(__file__).resolve().parent.parent
REAL = REPO / "data" / "real-cxr"
runner = CliRunner()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_patient_level_split_holds_for_both_parts() -> None:
    split_of: dict[str, set[str]] = {}
    labels = _rows(REAL / "classification" / "labels.csv")
    lungs = _rows(REAL / "lungs" / "splits.csv")
    for row in [*labels, *lungs]:
        split_of.setdefault(row["patient"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of.values())
    assert len(labels) == 436 and len(lungs) == 56 and len(split_of) == 274
    for row in labels:
        assert (REAL / "classification" / "images" / row["path"]).is_file(), row["path"]
    for row in lungs:
        assert (REAL / "lungs" / "masks" / "lungs" / f"{row['image']}.png").is_file()
    total = sum(p.stat().st_size for p in REAL.rglob("*") if p.is_file())
    assert total < 25_000_000


def test_nothing_in_the_project_reads_the_shared_folder() -> None:
    pattern = re.compile(r"real-cxr-scale|real-cxr-dev|\.\./shared|/work/shared")
    for folder in ("doll_core", "plugins", "tests", "experiments"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".toml") and path != Path(__file__).resolve():
                assert not pattern.search(path.read_text(encoding="utf-8")), path


TINY_REAL = """
name = "tiny-real"
[data.classification]
root = "{real}/classification"
dataset = "csv"
[data.classification.options]
images = "images"
patient_column = "patient"
split_column = "split"
finding_column = "finding"
where = {{ source = "kermany" }}
[data.classification.options.findings]
"No Finding" = "No Finding"
"Pneumonia/Bacterial" = "Pneumonia"
"Pneumonia/Viral" = "Pneumonia"
"Pneumonia/Viral/COVID-19" = "Pneumonia"
[data.tasks.lungs]
root = "{real}/lungs"
dataset = "segfolder"
options = {{ ignore_values = [127] }}
splits = "file"
split_file = "{real}/lungs/splits.csv"
[training]
image_size = 32
epochs = 1
batch_size = 32
num_workers = 0
[classifiers.resnet18]
backbone = "resnet18"
[explanation]
explainer = "saliency"
label_size = 16
limit = 24
[pretrain]
encoder_from = "resnet18"
image_size = 32
epochs = 1
batch_size = 8
num_workers = 0
[finetune]
inits = ["random", "doll"]
budgets = [4]
seeds = [0]
image_size = 32
epochs = 2
eval_interval = 2
batch_size = 4
num_workers = 0
[report]
overlay_images = 0
localization = false
"""


def test_the_shipped_real_data_runs_through_doll_run(tmp_path: Path) -> None:
    experiment = tmp_path / "tiny-real.toml"
    experiment.write_text(TINY_REAL.format(real=REAL.as_posix()))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(experiment), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["splits"]["lungs"]["images"] == {"train": 26, "valid": 9, "test": 21}
    assert results["splits"]["lungs"]["patients"] == {"train": 14, "valid": 6, "test": 9}
    assert results["labels"]["images"] == 24
    # every image was decoded once, into the run's cache
    assert list((out / "image-cache").rglob("*.npz"))
    too_many = runner.invoke(
        app,
        ["run", str(experiment), "--out", str(tmp_path / "r2"), "--set", "finetune.budgets=[27]"],
    )
    assert too_many.exit_code == 2
    assert "budget 27 is larger than its training split of 26 images" in too_many.output
