"""``doll evaluate``: classifiers x explainers x metrics into a leaderboard, paired draws,
image-level intervals, and clean refusals."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.evaluation.engine import ExplainerEvaluation, MetricValues
from doll_core.evaluation.leaderboard import build_leaderboard, image_mean_interval

runner = CliRunner()
FAST = [
    "--metric", "deletion", "--metric", "sparseness", "--metric", "pointing_game",
    "--metric", "random_logit",
    "--set", "deletion.steps=4", "--count", "4", "--bootstrap", "50",
]  # fmt: skip


def test_evaluate_writes_a_leaderboard_with_directions_intervals_and_ranks(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "board"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            f"a={tiny_checkpoints[0]}",
            "--checkpoint",
            f"b={tiny_checkpoints[1]}",
            "--data",
            str(small_phantom),
            "--explainer",
            "saliency",
            "--explainer",
            "gradcam",
            "--out",
            str(out),
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "deletion ↓" in result.stdout and "pointing_game ↑" in result.stdout
    for name in ("evaluation.md", "evaluation.csv", "evaluation.json", "evaluation.png"):
        assert (out / name).is_file(), name
    board = json.loads((out / "evaluation.json").read_text())
    assert [(r["classifier"], r["explainer"]) for r in board["rows"]] == [
        ("a", "saliency"), ("a", "gradcam"), ("b", "saliency"), ("b", "gradcam"),
    ]  # fmt: skip
    assert board["settings"]["params"] == {"deletion": {"steps": 4}}
    for row in board["rows"]:
        assert row["maps"] > 0 and row["error"] is None
        for name, cell in row["scores"].items():
            if cell["mean"] is not None and cell["low"] is not None:
                assert cell["low"] <= cell["mean"] + 1e-12 <= cell["high"] + 2e-12, name
        ranks = {row["scores"][n]["rank"] for n in ("deletion", "sparseness")}
        assert ranks <= {1.0, 2.0, 1.5}
    # the two explainers of one classifier explain the same maps (paired)
    assert board["rows"][0]["maps"] == board["rows"][1]["maps"]
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert len(rows) == 4 and "deletion_mean" in rows[0] and "deletion_rank" in rows[0]


def test_evaluate_refuses_unknown_metrics_and_parameters_before_any_work(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    base = ["evaluate", "--checkpoint", str(tiny_checkpoints[0]), "--data", str(small_phantom)]
    unknown = runner.invoke(app, [*base, "--metric", "delition"])
    assert unknown.exit_code == 2
    assert "unknown metric 'delition'; did you mean 'deletion'?" in unknown.output
    wrong = runner.invoke(app, [*base, "--metric", "deletion", "--set", "deletion.patchsize=4"])
    assert wrong.exit_code == 2 and "'patchsize'" in wrong.output
    missing = runner.invoke(app, ["evaluate", "--data", str(small_phantom)])
    assert missing.exit_code == 2 and "no classifier to evaluate" in missing.output
    not_a_run = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert not_a_run.exit_code == 2 and "not a finished run folder" in not_a_run.output


def test_image_bootstrap_resamples_images_not_maps() -> None:
    # image 0 has three maps scoring 1, image 1 one map scoring 0: the mean over maps is
    # 0.75; resampling images, a replicate holds image 0 twice (1.0), once each (0.75) or
    # image 1 twice (0.0)
    values = np.array([1.0, 1.0, 1.0, 0.0])
    image = np.array([0, 0, 0, 1])
    weights = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    cell = image_mean_interval(values, image, 2, weights)
    assert cell["mean"] == 0.75 and cell["n"] == 4
    assert cell["low"] == pytest.approx(np.percentile([1.0, 0.75, 0.0], 2.5))
    empty = image_mean_interval(np.array([math.nan]), np.array([0]), 1, None)
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_ranks_follow_each_metric_direction() -> None:
    class Lower:
        category, higher_is_better = "faithfulness", False

    class Higher:
        category, higher_is_better = "complexity", True

    def row(explainer: str, low: float, high: float) -> ExplainerEvaluation:
        return ExplainerEvaluation(
            "c",
            explainer,
            images=1,
            image=np.array([0]),
            metrics={"low": MetricValues(np.array([low])), "high": MetricValues(np.array([high]))},
        )

    board = build_leaderboard(
        [row("x", 0.1, 0.1), row("y", 0.5, 0.5)],
        {"low": Lower(), "high": Higher()},
        replicates=0,
        seed=0,
    )
    x, y = board["rows"]
    assert x["scores"]["low"]["rank"] == 1 and y["scores"]["low"]["rank"] == 2
    assert x["scores"]["high"]["rank"] == 2 and y["scores"]["high"]["rank"] == 1


def test_evaluate_against_a_ground_truth_file_equals_the_phantom_masks(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    """The phantom's own lesion masks as a CheXlocalize file at the classifier's size:
    the same maps, the same masks, so the same leaderboard as on the phantom."""
    from test_explain_ground_truth import _phantom_truth

    from doll_core.checkpoint import load_classifier

    _, meta = load_classifier(tiny_checkpoints[0])
    truth = _phantom_truth(small_phantom, tmp_path / "gt.json", meta.image_size)
    common = [
        "evaluate", "--checkpoint", f"c={tiny_checkpoints[0]}", "--explainer", "saliency",
        "--metric", "pointing_game", "--metric", "relevance_mass_accuracy",
        "--metric", "sparseness", "--count", "4", "--bootstrap", "0",
    ]  # fmt: skip
    on_phantom = runner.invoke(
        app, [*common, "--data", str(small_phantom), "--out", str(tmp_path / "p")]
    )
    images = small_phantom / "CheXpert-v1.0-small" / "valid"
    on_truth = runner.invoke(
        app,
        [
            *common,
            "--data",
            str(images),
            "--ground-truth",
            f"chexlocalize:{truth}",
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert on_phantom.exit_code == 0, on_phantom.output
    assert on_truth.exit_code == 0, on_truth.output
    phantom_row = json.loads((tmp_path / "p" / "evaluation.json").read_text())["rows"][0]
    truth_row = json.loads((tmp_path / "t" / "evaluation.json").read_text())["rows"][0]
    assert truth_row["maps"] == phantom_row["maps"] > 0
    for name in ("pointing_game", "relevance_mass_accuracy", "sparseness"):
        assert truth_row["scores"][name]["mean"] == pytest.approx(
            phantom_row["scores"][name]["mean"]
        ), name


def _phantom_with_unreadable(small_phantom: Path, tmp_path: Path, broken: int) -> Path:
    """A copy of the phantom whose first ``broken`` validation images with findings (in
    the order evaluation chooses them) are not images."""
    from doll_core.attribution.scoring import images_with_findings
    from doll_core.registry import get_registry

    root = tmp_path / "phantom"
    shutil.copytree(small_phantom, root)
    dataset = get_registry().create("dataset", "chexpert", root=root, split="valid", size=32)
    for index in images_with_findings(dataset, broken):
        dataset.image_path(index).write_bytes(b"not an image")
    return root


def test_unreadable_images_are_counted_not_hidden(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    """Issue 29, item 4: ``--count 3`` with one unreadable image says 2 explained and 1
    skipped (with its path and why), in the table and the JSON; none readable is exit 2."""
    root = _phantom_with_unreadable(small_phantom, tmp_path, broken=1)
    base = ["--checkpoint", str(tiny_checkpoints[0]), "--data", str(root), "--count", "3"]
    evaluated = runner.invoke(
        app,
        ["evaluate", *base, "--explainer", "saliency", "--metric", "sparseness",
         "--bootstrap", "0", "--out", str(tmp_path / "board")],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "2 images explained, 1 skipped as unreadable (first: " in evaluated.stderr
    board = json.loads((tmp_path / "board" / "evaluation.json").read_text())
    assert board["rows"][0]["images"] == 2 and len(board["skipped"]) == 1
    assert "2 images explained, 1 skipped" in (tmp_path / "board" / "evaluation.md").read_text()
    out = tmp_path / "scores.md"
    scored = runner.invoke(
        app, ["explain-scores", *base, "--explainer", "saliency", "--out", str(out)]
    )
    assert scored.exit_code == 0, scored.output
    assert "saliency: 2 images explained, 1 skipped as unreadable" in scored.stdout

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    (row,) = json.loads(out.with_suffix(".json").read_text(), parse_constant=refuse)
    assert row["images"] == 2 and row["skipped"][0]["reason"]
    nothing = _phantom_with_unreadable(small_phantom, tmp_path / "all", broken=3)
    for command in ("evaluate", "explain-scores"):
        argv = [command, "--checkpoint", str(tiny_checkpoints[0]), "--data", str(nothing)]
        result = runner.invoke(app, [*argv, "--count", "3", "--explainer", "saliency"])
        assert result.exit_code == 2, (command, result.output)
        assert "none of the 3 images chosen could be read" in result.stderr


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "deleton.patch=4",
            "no explainer, metric or 'engine' is called 'deleton' (did you mean 'deletion'?)",
        ),
        ("nosuch.x=1", "no explainer, metric or 'engine' is called 'nosuch'"),
        ("integrated_gradients.n_steps=4", "integrated_gradients is not among the explainers run"),
        ("deletion.patch=4.5", "patch"),
        ('cascading_randomisation.absolute="no"', "'absolute' takes true or false, got 'no'"),
        ("deletion.steps=true", "'steps' takes a number, got True"),
        ("deletion.blur_sigma=-1", "blur_sigma must be a finite number > 0, got -1"),
        ("saliency.nosuch=1", "has no parameter 'nosuch'"),  # was a cut 'refused' row, exit 0
    ],
)
def test_every_setting_is_used_or_refused_before_work(
    small_phantom: Path, tiny_checkpoints: list[Path], setting: str, expected: str
) -> None:
    """Issue 29, item 8: a misspelt or unused ``--set`` and a metric parameter of the wrong
    type or range are exit 2 naming them; they used to be ignored, a traceback, or taken
    (``absolute="no"`` read as true)."""
    result = runner.invoke(
        app,
        ["evaluate", "--checkpoint", str(tiny_checkpoints[0]), "--data", str(small_phantom),
         "--explainer", "saliency", "--metric", "deletion", "--metric",
         "cascading_randomisation", "--count", "2", "--set", setting],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "Traceback" not in result.output
