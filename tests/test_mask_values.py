"""Masks as published: foreground and ignored values, files read by content and one grey
rule, names matched by stem, masks of another size, and what ``doll data inspect`` says;
on hand-made files and on the real V7 lung masks in ``tests/data/real``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.configuration import parse_config
from doll_core.data.imageio import read_image, read_image_and_facts
from doll_core.data.maskrule import MaskRule
from doll_core.data.samples import collate_samples
from doll_core.errors import DollError
from doll_core.metrics.segmentation import SegmentationScores
from doll_core.registry import get_registry
from doll_core.segmentation.config import FinetuneConfig
from doll_core.segmentation.finetune import FinetuneTrainer
from doll_core.segmentation.losses import soft_dice_loss, weighted_bce

REAL = Path(__file__).parent / "data" / "real" / "covid-lungs"
#: V7's value for devices and markup ("Ignore") in its lung masks
V7_IGNORE = 127


def _segfolder(root: Path, **options: Any) -> Any:
    return get_registry().create("dataset", "segfolder", root=root, **options)


def _hand_made(root: Path, count: int = 4, size: int = 16) -> np.ndarray:
    """``count`` images with one lung mask each: 255 in columns 0-7 of rows 0-7 (64
    pixels), 127 in columns 12-15 of every row (64, to be ignored), 0 elsewhere (128).
    Returns the mask."""
    mask = np.zeros((size, size), np.uint8)
    mask[:8, : size // 2] = 255
    mask[:, 12:] = V7_IGNORE
    (root / "images").mkdir(parents=True)
    (root / "masks" / "lungs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"case {index}.png")
        Image.fromarray(mask).save(root / "masks" / "lungs" / f"case {index}.png")
    return mask


def test_ignore_values_leave_pixels_out_of_the_mask_and_into_the_weight(tmp_path: Path) -> None:
    raw = _hand_made(tmp_path)
    plain = _segfolder(tmp_path)[0]
    honoured = _segfolder(tmp_path, ignore_values=[V7_IGNORE])[0]
    assert "mask_weight" not in plain
    assert torch.equal(plain["mask"][0], torch.from_numpy(raw > 0).float())  # as before
    assert torch.equal(honoured["mask"][0], torch.from_numpy(raw == 255).float())
    assert honoured["mask_weight"].dtype == torch.float32
    assert torch.equal(honoured["mask_weight"][0], torch.from_numpy(raw != V7_IGNORE).float())
    chosen = _segfolder(tmp_path, foreground_values=[255])[0]  # 127 is then background
    assert torch.equal(chosen["mask"][0], torch.from_numpy(raw == 255).float())
    assert honoured["report"]["mask_values"] == {"lungs": {"0": 128, "127": 64, "255": 64}}


def test_a_mask_rule_names_the_option_that_is_wrong() -> None:
    with pytest.raises(DollError, match="ignore_values"):
        MaskRule.from_options(ignore_values=[-1])
    with pytest.raises(DollError, match="foreground_values"):
        MaskRule.from_options(foreground_values=["lung"])
    with pytest.raises(DollError, match=r"\[255\] are in both"):
        MaskRule.from_options(foreground_values=[255], ignore_values=[127, 255])
    assert MaskRule.from_options(ignore_values=127).ignore_values == (127,)


def test_weighted_losses_and_scores_equal_those_of_the_kept_pixels_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 4, 4, generator=generator)
    target = (torch.rand(2, 1, 4, 4, generator=generator) > 0.5).float()
    weight = torch.ones(2, 1, 4, 4)
    weight[..., 3] = 0  # the last column is ignored
    kept = weight.bool()
    expected_bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[kept], target[kept])
    assert torch.allclose(weighted_bce(logits, target, weight), expected_bce)
    cropped_dice = soft_dice_loss(logits[..., :3], target[..., :3])
    assert torch.allclose(soft_dice_loss(logits, target, weight=weight), cropped_dice)
    scores = SegmentationScores(["lungs"])
    prediction = torch.ones(2, 1, 4, 4, dtype=torch.bool)  # foreground in ignored pixels too
    scores.update(prediction, target.bool(), weight)
    truth_kept = int(target[..., :3].sum())
    assert scores.iou()[0] == pytest.approx(truth_kept / 24)  # 2 images x 4 x 3 kept
    with pytest.raises(DollError, match="weight"):
        scores.update(prediction, target.bool(), weight[:, :, :2])


class _Everywhere(torch.nn.Module):
    """A segmenter that calls every pixel foreground."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.ones(images.shape[0], 1, *images.shape[-2:])


def test_fine_tuning_leaves_ignored_pixels_out_of_its_loss_and_its_iou(tmp_path: Path) -> None:
    raw = _hand_made(tmp_path / "data", count=6)
    config = parse_config(
        FinetuneConfig,
        {
            "data": str(tmp_path / "data"),
            "image_size": 16,
            "epochs": 1,
            "batch_size": 2,
            "num_workers": 0,
            "device": "cpu",
            "encoder": "resnet18",
            "dataset_options": {"ignore_values": [V7_IGNORE]},
        },
    )
    trainer = FinetuneTrainer(config, tmp_path / "run", get_registry())
    batch = next(iter(trainer.train_loader))
    assert batch["mask_weight"].shape == batch["mask"].shape
    loss, count = trainer.training_loss(batch)
    with torch.no_grad():
        logits = trainer.trained(batch["image"])
    weight, mask = batch["mask_weight"], batch["mask"]
    kept = weight.bool()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[kept], mask[kept])
    if config.dice_weight > 0:
        expected = expected + config.dice_weight * soft_dice_loss(logits[..., :12], mask[..., :12])
    assert count == 2
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    summary, _ = trainer.evaluate(trainer.val_set, _Everywhere())
    lung, kept_pixels = int((raw == 255).sum()), int((raw != V7_IGNORE).sum())
    assert summary["iou"]["lungs"] == pytest.approx(lung / kept_pixels, abs=1e-6)
    assert not math.isclose(lung / kept_pixels, lung / raw.size)


def test_real_v7_masks_count_their_ignore_value_apart() -> None:
    plain = _segfolder(REAL).summary()
    honoured = _segfolder(REAL, ignore_values=[V7_IGNORE]).summary()
    assert set(plain["mask_values"]["lungs"]) == {"0", "127", "255"}
    ignored = honoured["ignored_fraction"]["lungs"]
    assert ignored > 0 and plain["ignored_fraction"]["lungs"] == 0
    assert honoured["pixel_fraction"]["lungs"] == pytest.approx(
        plain["pixel_fraction"]["lungs"] - ignored, abs=1e-5
    )
    per_image = {}
    dataset = _segfolder(REAL, ignore_values=[V7_IGNORE])
    for index in range(len(dataset)):
        sample = dataset[index]
        per_image[sample["id"]] = float((1 - sample["mask_weight"]).mean())
    assert per_image["thnov10p5641g006-c"] == 0  # its mask has no 127
    assert per_image["f64132c8"] > 0 and per_image["40779_2020_233_Fig2_HTML-a"] > 0


def test_masks_as_published_png_behind_jpg_names_read_as_the_pngs_they_are() -> None:
    published = _segfolder(
        REAL, masks="masks_as_published", layout="binary", classes=["lungs"], ignore_values=[127]
    )
    renamed = _segfolder(REAL, ignore_values=[127])
    assert Path(published._masks["lungs"]["f64132c8"]).suffix == ".jpg"
    for index in range(len(renamed)):
        a, b = published[index], renamed[index]
        assert a["id"] == b["id"]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["mask_weight"], b["mask_weight"])


def test_real_rgb_figures_become_one_grey_channel_by_luma() -> None:
    path = REAL / "images" / "40779_2020_233_Fig2_HTML-a.png"
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255
    expected = rgb @ np.array([0.299, 0.587, 0.114])
    grey, facts = read_image_and_facts(path)
    assert grey.shape == (1, 481, 479) and grey.dtype == np.float32
    np.testing.assert_allclose(grey[0], expected, atol=1e-6)
    assert facts.format == "PNG" and facts.size == (481, 479)
    assert facts.colour_fraction is not None and facts.colour_fraction > 1e-3  # red arrows
    summary = _segfolder(REAL).summary()
    assert summary["images_with_colour_annotation"] == 1


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "I;16", "RGB"])
def test_every_mode_becomes_grey_by_the_one_rule(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    grey8 = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    if mode == "P":
        image = Image.fromarray(rgb).quantize(16)
        shown = np.asarray(image.convert("RGB"), np.float64) / 255
        expected = shown @ np.array([0.299, 0.587, 0.114])
    elif mode == "LA":
        alpha = rng.integers(0, 256, (5, 6), dtype=np.uint8)
        image = Image.fromarray(np.stack([grey8, alpha], axis=2), "LA")
        expected = grey8 / 255  # opacity left out
    elif mode == "RGBA":
        alpha = np.zeros((5, 6, 1), np.uint8)  # fully transparent: still its colour
        image = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
        expected = rgb / 255 @ np.array([0.299, 0.587, 0.114])
    elif mode == "I;16":
        values = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
        image = Image.fromarray(values)
        expected = values / 65535
    else:
        image = Image.fromarray(rgb)
        expected = rgb / 255 @ np.array([0.299, 0.587, 0.114])
    image.save(tmp_path / "x.png")
    shutil.move(tmp_path / "x.png", tmp_path / "x.JPG")  # named as what it is not
    np.testing.assert_allclose(read_image(tmp_path / "x.JPG")[0], expected, atol=1e-6)


def test_names_with_spaces_parentheses_dots_and_mixed_case_match_by_stem(tmp_path: Path) -> None:
    names = ["Normal (1)", "covid 2.v1.final", "CASE_3"]
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "lungs").mkdir(parents=True)
    for index, name in enumerate(names):
        image = np.full((8, 8), 40 * index, np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        mask[index, :] = 255
        Image.fromarray(image).save(tmp_path / "images" / f"{name}.PNG", format="PNG")
        Image.fromarray(mask).save(tmp_path / "masks" / "lungs" / f"{name}.JpG", format="PNG")
    dataset = _segfolder(tmp_path)
    samples = {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}
    assert set(samples) == set(names)
    for index, name in enumerate(names):
        assert samples[name]["mask"][0, index].all() and samples[name]["mask"].sum() == 8


def test_a_mask_of_another_size_is_resized_to_its_image_and_reported(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "lungs").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "images" / "a.png")
    small = np.zeros((4, 3), np.uint8)  # half the height, a quarter of the width
    small[1, 2] = 255
    Image.fromarray(small).save(tmp_path / "masks" / "lungs" / "a.png")
    sample = _segfolder(tmp_path)[0]
    expected = np.zeros((8, 12), np.float32)
    expected[2:4, 8:12] = 1  # nearest, each axis by its own scale
    assert torch.equal(sample["mask"][0], torch.from_numpy(expected))
    assert sample["report"]["mask_resized"] == {"from": [4, 3], "to": [8, 12]}
    batch = collate_samples([sample, sample])
    assert "report" not in batch and batch["reports"][0]["id"] == "a"
    assert _segfolder(tmp_path).summary()["masks_resized_to_image"] == 1


def test_index_masks_leave_their_ignore_value_out(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "a.png")
    values = np.array([[0, 1, 2, 255]] * 4, np.uint8)  # VOC-style border value 255
    Image.fromarray(values).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DollError, match="holds value 255"):
        _segfolder(tmp_path, classes=["a", "b"], on_error="fail")[0]
    sample = _segfolder(tmp_path, classes=["a", "b"], ignore_values=[255])[0]
    assert sample["mask"][:, 0].tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]
    assert sample["mask_weight"][:, 0].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0]]
    with pytest.raises(DollError, match="foreground_values applies to binary masks"):
        _segfolder(tmp_path, classes=["a", "b"], foreground_values=[1])


def test_data_inspect_reports_values_and_the_ignored_fraction(tmp_path: Path) -> None:
    runner = CliRunner()
    _hand_made(tmp_path)
    args = ["data", "inspect", "segfolder", str(tmp_path), "--set", "ignore_values=[127]"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["splits"]["all"]
    assert summary["pixel_fraction"]["lungs"] == pytest.approx(64 / 256)
    assert summary["ignored_fraction"]["lungs"] == pytest.approx(64 / 256)
    assert summary["mask_values"]["lungs"] == {"0": 0.5, "127": 0.25, "255": 0.25}
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0 and "ignored fraction" in shown.output and "127" in shown.output
    bad = runner.invoke(
        app, ["data", "inspect", "segfolder", str(tmp_path), "--set", "ignore_values=[-3]"]
    )
    assert bad.exit_code == 2 and "ignore_values" in bad.output


def test_a_large_folder_is_listed_not_decoded_up_front(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "lungs").mkdir(parents=True)
    for index in range(1000):  # not images at all: any decoding up front would fail
        (tmp_path / "images" / f"{index}.png").write_bytes(b"not a png")
        (tmp_path / "masks" / "lungs" / f"{index}.png").write_bytes(b"not a png")
    dataset = _segfolder(tmp_path, ignore_values=[127])
    assert len(dataset) == 1000
    skipped = dataset[7]
    assert skipped.id == dataset.sample_id(7) and "corrupt or unsupported" in skipped.reason
