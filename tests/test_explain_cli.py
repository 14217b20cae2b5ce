"""``doll explain`` and ``doll explain-scores`` on a classifier trained on the phantom."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.phantom.layout import lesion_mask_path

runner = CliRunner()


@pytest.fixture
def checkpoint(tiny_checkpoints: list[Path]) -> Path:
    return tiny_checkpoints[0]


def _image_with_findings(root: Path) -> tuple[Path, str, Path]:
    for line in (root / "CheXpert-v1.0-small" / "valid.csv").read_text().splitlines()[1:]:
        image_id = line.split(",")[0]
        for name in ("Pleural Effusion", "Cardiomegaly", "Support Devices", "Lung Opacity"):
            mask = lesion_mask_path(root, image_id, name)
            if mask.is_file():
                return root / image_id, name, mask
    raise AssertionError("the small phantom has no finding in its validation split")


def _explain(checkpoint: Path, image: Path, out: Path) -> list[str]:
    """``doll explain``'s required arguments."""
    return ["explain", "--checkpoint", str(checkpoint), "--image", str(image), "--out", str(out)]


def test_explain_writes_one_overlay_per_explainer_and_target(
    small_phantom: Path, checkpoint: Path, tmp_path: Path
) -> None:
    image, name, mask = _image_with_findings(small_phantom)
    out = tmp_path / "maps.png"
    result = runner.invoke(
        app,
        [
            *_explain(checkpoint, image, out),
            "--explainer",
            "saliency",
            "--explainer",
            "gradcam",
            "--targets",
            name,
            "--targets",
            "Edema",
            "--mask",
            f"{name}={mask}",
            "--set",
            "saliency.abs=false",
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as picture:
        assert picture.width > 500 and picture.height > 400  # 3 columns, 2 rows
    wrong = runner.invoke(app, [*_explain(checkpoint, image, out), "--targets", "Pneumonitis"])
    assert wrong.exit_code == 2 and "unknown target 'Pneumonitis'" in wrong.stderr
    missing = runner.invoke(app, _explain(tmp_path / "none.pt", image, out))
    assert missing.exit_code == 2 and "checkpoint not found" in missing.stderr


def test_explain_scores_table(small_phantom: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.md"
    result = runner.invoke(
        app,
        [
            "explain-scores",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(small_phantom),
            "--count",
            "4",
            "--explainer",
            "gradcam",
            "--explainer",
            "saliency",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    table = out.read_text().splitlines()
    assert table[0].startswith("| explainer | pointing_game ↑ | iou ↑")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["gradcam", "saliency"]
    rows = json.loads(out.with_suffix(".json").read_text())
    assert rows[0]["maps"] > 0 and 0 <= rows[0]["means"]["pixel_auroc"] <= 1


def test_explain_takes_engine_options_apart_from_explainer_parameters(
    small_phantom: Path, checkpoint: Path, tmp_path: Path
) -> None:
    image, _, _ = _image_with_findings(small_phantom)
    out = tmp_path / "maps.png"
    base = [*_explain(checkpoint, image, out), "--explainer", "saliency"]
    result = runner.invoke(app, [*base, "--set", "engine.max_rows=1"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, [*base, "--set", "engine.bogus=1"])
    assert bad.exit_code == 2 and "--set engine: bogus: unknown key" in bad.stderr
    with pytest.warns(FutureWarning, match=r"--set saliency.KEY: max_rows.*--set engine.KEY"):
        old = runner.invoke(app, [*base, "--set", "saliency.max_rows=1"])
    assert old.exit_code == 0, old.output
