"""The phantom: exact masks, plausible placement, consistent labels, determinism, safe writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.data.chexpert_format import CHEXPERT_HEADER
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.phantom import writer
from doll_core.phantom.case import VISIBLE_CHANGE, render_case
from doll_core.phantom.findings import RENDERERS
from doll_core.phantom.labels import FindingsConfig
from doll_core.phantom.layout import lesion_mask_path
from doll_core.phantom.writer import PhantomSpec, write_phantom

CONFIG = FindingsConfig()
DRAWN = list(RENDERERS)


@pytest.mark.parametrize("name", DRAWN)
def test_a_mask_is_exactly_the_pixels_its_finding_changed(name: str) -> None:
    with_it = render_case(np.random.default_rng(11), 64, CONFIG, findings=[name])
    without = render_case(np.random.default_rng(11), 64, CONFIG, findings=[])
    changed = np.abs(with_it.clean - without.clean) >= VISIBLE_CHANGE
    assert changed.any(), f"{name} changed nothing"
    np.testing.assert_array_equal(with_it.masks[name], changed)
    # in the 8-bit images (same noise), every clear difference lies inside the mask
    clear = np.abs(with_it.image.astype(int) - without.image.astype(int)) >= 2
    assert not (clear & ~with_it.masks[name]).any()


def test_finding_contrast_scales_findings_and_nothing_else() -> None:
    strong = FindingsConfig(contrast=2.5)
    plain = render_case(np.random.default_rng(5), 64, CONFIG, findings=["Pleural Effusion"])
    bold = render_case(np.random.default_rng(5), 64, strong, findings=["Pleural Effusion"])
    for config in (CONFIG, strong):  # anatomy, exposure and noise do not change
        empty = render_case(np.random.default_rng(5), 64, config, findings=[])
        np.testing.assert_array_equal(
            empty.image, render_case(np.random.default_rng(5), 64, CONFIG, findings=[]).image
        )
    without = render_case(np.random.default_rng(5), 64, CONFIG, findings=[]).clean
    weak_change = np.abs(plain.clean - without)
    bold_change = np.abs(bold.clean - without)
    mask = plain.masks["Pleural Effusion"]
    assert bold_change[mask].mean() > 1.5 * weak_change[mask].mean()
    assert (bold.masks["Pleural Effusion"] >= mask).all()  # a stronger finding covers more
    with pytest.raises(DollError, match="contrast"):
        FindingsConfig(contrast=0.0)


def test_a_parent_mask_holds_its_childrens_pixels() -> None:
    case = render_case(np.random.default_rng(3), 64, CONFIG, findings=["Pneumonia", "Edema"])
    assert case.findings.present == ("Lung Opacity", "Edema", "Consolidation", "Pneumonia")
    np.testing.assert_array_equal(case.masks["Consolidation"], case.masks["Pneumonia"])
    np.testing.assert_array_equal(
        case.masks["Lung Opacity"], case.masks["Pneumonia"] | case.masks["Edema"]
    )


def _centroid_row(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[0].mean() / mask.shape[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_findings_sit_where_they_belong(seed: int) -> None:
    def case(name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        drawn = render_case(np.random.default_rng(seed), 96, CONFIG, findings=[name])
        return drawn.masks[name], drawn.organs

    lesion, organs = case("Lung Lesion")
    lungs = organs["left lung"] | organs["right lung"] | organs["heart"]
    assert (lesion & lungs).sum() >= 0.8 * lesion.sum()
    assert _centroid_row(case("Pneumothorax")[0]) < 0.45  # at an apex
    assert _centroid_row(case("Pleural Effusion")[0]) > 0.5  # at a costophrenic angle
    enlarged, organs = case("Cardiomegaly")
    assert (enlarged & organs["heart"]).sum() >= 0.5 * enlarged.sum()  # the heart grew
    assert _centroid_row(case("Edema")[0]) == pytest.approx(0.45, abs=0.15)  # perihilar


def test_every_observation_occurs_with_default_prevalence() -> None:
    seen: set[str] = set()
    for seed in range(60):
        seen |= set(render_case(np.random.default_rng(seed), 32, CONFIG).findings.present)
    assert seen == set(OBSERVATIONS) - {"No Finding"}


def test_findings_config_is_validated() -> None:
    with pytest.raises(DollError, match=r"unknown observations \['Pneumonitis'\]"):
        FindingsConfig(prevalence={"Pneumonitis": 0.1})
    with pytest.raises(DollError, match="prevalence of 'Edema' must be a probability"):
        FindingsConfig(prevalence={"Edema": 1.5})
    with pytest.raises(DollError, match="hierarchy has a cycle"):
        FindingsConfig(hierarchy={"Edema": "Lung Opacity", "Lung Opacity": "Edema"})


def _rows(root: Path, split: str) -> list[dict[str, str]]:
    with (root / "CheXpert-v1.0-small" / f"{split}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_header_paths_and_labels_agree_with_the_masks(small_phantom: Path) -> None:
    header = (small_phantom / "CheXpert-v1.0-small" / "train.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == CHEXPERT_HEADER
    for split in ("train", "valid"):
        rows = _rows(small_phantom, split)
        assert len(rows) == {"train": 24, "valid": 8}[split]
        for row in rows:
            assert row["Path"].startswith(f"CheXpert-v1.0-small/{split}/patient")
            assert row["Path"].endswith("/view1_frontal.jpg")
            assert (small_phantom / row["Path"]).is_file()
            present = {
                name
                for name in OBSERVATIONS[1:]
                if lesion_mask_path(small_phantom, row["Path"], name).is_file()
            }
            for name in OBSERVATIONS[1:]:
                if split == "valid":  # exact labels, like CheXpert's valid.csv
                    assert row[name] == ("1.0" if name in present else "0.0")
                elif name in present:
                    assert row[name] in ("1.0", "-1.0")
                else:
                    assert row[name] in ("0.0", "", "-1.0")
            pathology = present - {"Support Devices"}
            assert (row["No Finding"] == "1.0") == (not pathology)
            for name in present:
                mask = np.asarray(Image.open(lesion_mask_path(small_phantom, row["Path"], name)))
                assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255} and mask.any()


def test_uncertain_and_blank_labels_occur_in_training_rows(small_phantom: Path) -> None:
    cells = [row[name] for row in _rows(small_phantom, "train") for name in OBSERVATIONS[1:]]
    assert {"1.0", "0.0", "-1.0", ""} <= set(cells)
    manifest = json.loads((small_phantom / "PHANTOM.json").read_text())
    assert manifest["images"] == {"chexpert": 32, "organs": 4, "infection": 10, "jsrt": 2}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "PHANTOM.json"
    }


def test_same_seed_same_phantom_whatever_the_workers(tmp_path: Path) -> None:
    spec = PhantomSpec(n_train=6, n_valid=2, n_organs=2, n_infection=3, size=48, seed=5)
    write_phantom(tmp_path / "one", spec, workers=1)
    write_phantom(tmp_path / "two", spec, workers=2)
    first, second = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert first == second
    write_phantom(
        tmp_path / "other",
        PhantomSpec(n_train=6, n_valid=2, n_organs=2, n_infection=3, size=48, seed=6),
    )
    assert _files(tmp_path / "other") != first


def test_writes_are_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PhantomSpec(n_train=2, n_valid=1, n_organs=1, n_infection=0, size=32)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("do not delete")
    with pytest.raises(DollError, match="is not empty and holds no phantom"):
        write_phantom(busy, spec)
    assert (busy / "thesis.tex").read_text() == "do not delete"

    out = tmp_path / "phantom"
    write_phantom(out, spec)
    with pytest.raises(DollError, match="pass --overwrite"):
        write_phantom(out, spec)
    write_phantom(
        out, PhantomSpec(n_train=3, n_valid=1, n_organs=0, n_infection=0, size=32), overwrite=True
    )
    assert len(_rows(out, "train")) == 3

    def explode(*_: object) -> dict[str, object]:
        raise RuntimeError("disk full")

    monkeypatch.setitem(writer._WRITERS, "organs", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_phantom(tmp_path / "broken", spec)
    assert not (tmp_path / "broken").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_phantom_inspect_and_preview(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-phantom"
    args = [
        "data",
        "phantom",
        "--out",
        str(out),
        "--n-train",
        "5",
        "--n-valid",
        "2",
        "--n-organs",
        "2",
        "--n-infection",
        "3",
        "--size",
        "48",
        "--seed",
        "1",
        "--finding-contrast",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "chexpert 7, organs 2, infection 3, jsrt 0 images" in result.stdout
    manifest = json.loads((out / "PHANTOM.json").read_text())
    assert manifest["spec"]["findings"]["contrast"] == 2.0
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --overwrite" in again.stderr

    report = json.loads(
        runner.invoke(app, ["data", "inspect", "chexpert", str(out), "--json"]).stdout
    )
    assert report["splits"]["train"]["images"] == 5 and report["splits"]["valid"]["images"] == 2
    no_finding = report["splits"]["valid"]["observations"]["No Finding"]
    assert no_finding["positive"] + no_finding["negative"] == 2
    organs = runner.invoke(app, ["data", "inspect", "segfolder", str(out / "organs"), "--json"])
    assert json.loads(organs.stdout)["splits"]["all"]["classes"] == ["clavicles", "heart", "lungs"]
    covid = runner.invoke(app, ["data", "inspect", "covid-qu-ex", str(out / "COVID-QU-Ex")])
    assert covid.exit_code == 0 and "infection" in covid.stdout
    missing = runner.invoke(app, ["data", "inspect", "jsrt", str(out)])
    assert missing.exit_code == 2 and "no .IMG files" in missing.stderr

    picture = tmp_path / "preview.png"
    shown = runner.invoke(app, ["data", "preview", str(out), "--out", str(picture), "--count", "4"])
    assert shown.exit_code == 0, shown.output
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width > 300
