"""``doll explain-scores --ground-truth``: explainers scored against ground truth files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from doll_core.attribution.scoring import score_explainers
from doll_core.checkpoint import load_classifier
from doll_core.cli import app
from doll_core.data.imageio import read_mask, resize_mask
from doll_core.groundtruth import read_ground_truth
from doll_core.groundtruth.matching import chexlocalize_id
from doll_core.groundtruth.names import chexlocalize_name
from doll_core.groundtruth.rle import encode_mask
from doll_core.observations import OBSERVATIONS
from doll_core.phantom.layout import lesion_mask_path

runner = CliRunner()


def _phantom_truth(phantom: Path, out: Path, size: int | None = None) -> Path:
    """CheXlocalize segmentations of the phantom's validation lesion masks (resized to
    ``size`` as the phantom scoring resizes them), under CheXlocalize ids."""
    entries: dict[str, dict[str, object]] = {}
    rows = (phantom / "CheXpert-v1.0-small" / "valid.csv").read_text().splitlines()[1:]
    for line in rows:
        path = line.split(",")[0]
        entry = entries.setdefault(str(chexlocalize_id(path)), {})
        for name in OBSERVATIONS[1:]:
            mask_path = lesion_mask_path(phantom, path, name)
            if mask_path.is_file():
                mask = read_mask(mask_path)
                if size is not None:
                    tensor = torch.from_numpy(mask.astype(np.float32))[None]
                    mask = resize_mask(tensor, (size, size))[0].numpy() > 0.5
                entry[chexlocalize_name(name)] = encode_mask(mask)
    out.write_text(json.dumps(entries))
    return out


def test_ground_truth_at_the_model_size_scores_as_the_phantom(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    """The phantom's own masks as a CheXlocalize file at the classifier's size: the
    project's metrics are the phantom scoring's (validation labels are exact, so the same
    maps are explained)."""
    model, meta = load_classifier(tiny_checkpoints[0])
    truth = read_ground_truth(
        f"chexlocalize:{_phantom_truth(small_phantom, tmp_path / 'gt.json', meta.image_size)}"
    )
    common = {"image_size": meta.image_size, "count": 8, "randomization_images": 0}
    phantom = score_explainers(model, small_phantom, ["saliency"], **common)[0]
    images = small_phantom / "CheXpert-v1.0-small" / "valid"
    real = score_explainers(model, images, ["saliency"], ground_truth=truth, **common)[0]
    assert real.error is None and phantom.error is None and real.maps > 0
    for name, value in phantom.means.items():
        assert real.means[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert 0 <= real.means["hit_rate"] <= 1 and 0 <= real.means["chexlocalize_miou"] <= 1
    assert set(real.per_observation) <= set(OBSERVATIONS[1:])
    assert sum(int(v["maps"]) for v in real.per_observation.values()) == real.maps


def test_explain_scores_command_at_the_native_size(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    gt = _phantom_truth(small_phantom, tmp_path / "gt.json")  # masks at 64², the model 32²
    out = tmp_path / "scores.md"
    base = ["explain-scores", "--checkpoint", str(tiny_checkpoints[0]), "--explainer", "gradcam"]
    result = runner.invoke(
        app,
        [
            *base,
            "--data",
            str(small_phantom / "CheXpert-v1.0-small"),
            "--ground-truth",
            f"chexlocalize:{gt}",
            "--threshold",
            "0.5",
            "--count",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    table = out.read_text()
    assert table.startswith("| explainer | chexlocalize_miou ↑ | hit_rate ↑ | pointing_game ↑")
    assert "| explainer | observation | maps | chexlocalize_miou ↑" in table
    rows = json.loads(out.with_suffix(".json").read_text())
    assert rows[0]["maps"] == sum(v["maps"] for v in rows[0]["per_observation"].values())
    lonely = runner.invoke(app, [*base, "--data", str(small_phantom), "--threshold", "0.5"])
    assert lonely.exit_code == 2 and "needs --ground-truth" in lonely.stderr
    nothing = runner.invoke(
        app, [*base, "--data", str(tmp_path), "--ground-truth", f"chexlocalize:{gt}"]
    )
    assert nothing.exit_code == 2 and "no image under" in nothing.stderr


def _edited_truth(gt: Path, edit: str) -> Path:
    """The phantom's ground truth with every mask's size or counts broken (``edit``)."""
    entries = json.loads(gt.read_text())
    for entry in entries.values():
        for rle in entry.values():
            if edit == "wider":  # what a rotated or cropped copy of a 96 x 64 image meets
                wide = np.zeros((64, 96), dtype=bool)
                wide[20:40, 30:60] = True
                rle.update(encode_mask(wide))
            else:
                rle["counts"] = "0"  # runs that do not fill the size: damaged
    out = gt.with_name(f"{edit}.json")
    out.write_text(json.dumps(entries))
    return out


@pytest.mark.parametrize("edit", ["wider", "damaged"])
def test_ground_truth_that_does_not_fit_stops_every_scoring(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path, edit: str
) -> None:
    """Issue 29, item 6: an image whose shape is not its ground truth's (a rotated one),
    or a mask that does not decode, is exit 2 in explain-scores and evaluate, as in
    localization compare; it used to be a 'refused' explainer row and exit 0."""
    gt = _edited_truth(_phantom_truth(small_phantom, tmp_path / "gt.json"), edit)
    images = str(small_phantom / "CheXpert-v1.0-small")
    common = ["--checkpoint", str(tiny_checkpoints[0]), "--explainer", "saliency"]
    common += ["--data", images, "--ground-truth", f"chexlocalize:{gt}", "--count", "2"]
    expected = "rotated, cropped or another picture" if edit == "wider" else "RLE"
    for command in (["explain-scores"], ["evaluate", "--metric", "pointing_game"]):
        result = runner.invoke(app, [*command, *common])
        assert result.exit_code == 2, (command, result.output)
        assert expected in result.stderr and "Traceback" not in result.output
