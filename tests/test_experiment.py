"""Experiments: validation, overrides, stage keys and reuse, reports, ablation, torchrun.

kill -9 and other faults of whole runs are in ``test_faults.py``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from experiments_helpers import TINY
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.configuration import parse_config, settings_key
from doll_core.errors import DollError
from doll_core.experiment.ablation import ablation_markdown, grid_points, run_ablation
from doll_core.experiment.loading import load_experiment, validate_experiment
from doll_core.experiment.overrides import apply_overrides, parse_value, parse_vary
from doll_core.experiment.report import results_csv, summary_rows
from doll_core.experiment.runner import run_experiment
from doll_core.experiment.stages import StageCache, stage_key
from doll_core.labels.combine import fuse_stores
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.generate import generate_labels
from doll_core.labels.store import LabelStore
from doll_core.locking import LOCK_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]

runner = CliRunner()


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("experiment") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_experiment: Path) -> tuple[Path, dict[str, Any]]:
    """One uninterrupted run of the tiny experiment (the reference for other tests)."""
    out = tiny_experiment.parent / "run"
    experiment, document = load_experiment(tiny_experiment)
    return out, run_experiment(experiment, document, out, device="cpu")


# -- overrides ---------------------------------------------------------------------------


def test_values_are_toml_or_bare_strings() -> None:
    assert parse_value("3") == 3
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True
    assert parse_value('[8, "all"]') == [8, "all"]
    assert parse_value("{n_steps = 4}") == {"n_steps": 4}
    assert parse_value("gradcam") == "gradcam"
    assert parse_value('"folders"') == "folders"


def test_overrides_set_nested_keys_and_keep_the_original() -> None:
    document = {"finetune": {"seeds": [0]}, "name": "x"}
    result = apply_overrides(document, ["finetune.seeds=[1,2]", "explanation.explainer=lrp"])
    assert result == {
        "finetune": {"seeds": [1, 2]},
        "name": "x",
        "explanation": {"explainer": "lrp"},
    }
    assert document == {"finetune": {"seeds": [0]}, "name": "x"}
    with pytest.raises(DollError, match="name is a value"):
        apply_overrides(document, ["name.deeper=1"])
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(DollError, match="KEY=VALUE"):
            apply_overrides(document, [bad])


def test_vary_splits_on_top_level_commas() -> None:
    assert parse_vary("finetune.budgets=[8,32],[8]") == ("finetune.budgets", [[8, 32], [8]])
    assert parse_vary("explanation.explainer=saliency,gradcam") == (
        "explanation.explainer",
        ["saliency", "gradcam"],
    )
    with pytest.raises(DollError, match="at least two"):
        parse_vary("fusion.name=mean")
    with pytest.raises(DollError, match="empty value"):
        parse_vary("fusion.name=mean,")
    assert grid_points([("a", [1, 2]), ("b", ["x", "y"])]) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]


# -- validation --------------------------------------------------------------------------


def _document(**changes: Any) -> dict[str, Any]:
    import tomllib

    document = tomllib.loads(TINY)
    for key, value in changes.items():
        document = apply_overrides(document, [f"{key}={value}"])
    return document


def test_the_tiny_and_shipped_experiments_validate(tmp_path: Path) -> None:
    validate_experiment(_document())
    for path in sorted((REPO_ROOT / "experiments").glob("*.toml")):
        overrides = []
        if path.stem == "chexpert_paper":  # its data roots are the user's: stand-ins here
            for key in ("classification", "tasks.organs", "tasks.infection"):
                folder = tmp_path / key
                folder.mkdir()
                overrides.append(f'data.{key}.root="{folder}"')
        if path.stem == "real_lungs":  # the full-size sources are the user's: DoLL's copies
            real = REPO_ROOT / "data" / "real-cxr"
            overrides += [f'data.classification.root="{real / "classification"}"',
                          f'data.tasks.lungs.root="{real / "lungs"}"']  # fmt: skip
        experiment, _ = load_experiment(path, overrides)
        for key, values in experiment.ablation.vary.items():  # every grid point is valid
            for value in values:
                load_experiment(path, [*overrides, f"{key}={json.dumps(value)}"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("finetune.bogus", "1", "finetune.bogus: unknown key"),
        ("bogus", "1", "bogus: unknown key"),
        ("classifiers.tiny.epochs", '"many"', "classifiers.tiny.epochs: Input should be a valid"),
        ("training.lr", "-1", "training.lr: Input should be greater than 0"),
        ("data.tasks.lungs.root", '"/no/such/folder"', "data.tasks.lungs.root: folder not found"),
        ("explanation.explainer", "gradcamm", "did you mean 'gradcam'"),
        ("fusion.name", "avg", "fusion.name: unknown fusion 'avg'"),
        ("pretrain.head", "unett", "pretrain.head: unknown seg_head"),
        ("classifiers.tiny.backbone", "resnet81", "classifiers.tiny.backbone: unknown backbone"),
        (
            "explanation.explainer_params",
            "{n_stepz = 3}",
            "explanation.explainer_params.n_stepz: explainer 'saliency' has no parameter",
        ),
        ("explanation.data", '"/x"', "explanation.data: set by the runner"),
        ("pretrain.encoder_from", "tiny", "no segmentation-encoder counterpart"),
        ("explanation.classifiers", '["nope"]', "no classifier named 'nope'"),
        ("finetune.tasks", '["lungs"]', "no task named 'lungs'"),
        ("finetune.inits", '["checkpoint"]', "init 'checkpoint' needs a file"),
        ("finetune.seeds", "[0, 0]", "a seed is listed twice"),
        ("data.tasks.organs.root", '"/x"', "give exactly one of phantom"),
        ("evaluation.metrics", '["delition"]', "evaluation: unknown metric 'delition'"),
        ("device", '"tpu:7"', "device: unknown device 'tpu:7'; use auto, cpu"),
        ("device", '"cuda:x"', "unknown device 'cuda:x'"),
        ("explanation.label_size", "100000", "explanation.label_size: Input should be less"),
        ("evaluation.params", "{sparseness = {k = 1}}", "evaluation.params: no evaluation.metrics"),
        (
            "pretrain.head_params",
            "{decoder_channels = [8, 8, 8]}",
            "pretrain.head_params: seg head 'unet' with decoder_channels = [8, 8, 8] cannot "
            "build a model with encoder 'resnet18': ValueError: Model depth is 5, but you "
            "provide `decoder_channels` for 3",
        ),
        (
            "finetune.head_params",
            '{decoder_channels = "x"}',
            "finetune.head_params: seg head 'unet' with decoder_channels = 'x' cannot build",
        ),
        (
            "evaluation",
            '{metrics = ["deletion"], params = {deletion = {patch = 0}}}',
            "evaluation: metric 'deletion' (from distribution 'doll') could not be built",
        ),
    ],
)
def test_each_problem_is_named(key: str, value: str, message: str) -> None:
    with pytest.raises(DollError) as caught:
        validate_experiment(_document(**{key: value}))
    assert message in str(caught.value)


def test_a_bad_device_option_is_one_line_before_any_folder_is_made(tmp_path: Path) -> None:
    experiment = tmp_path / "tiny.toml"
    experiment.write_text(TINY)
    for command in (
        ["run", str(experiment), "--out", str(tmp_path / "run"), "--device", "tpu"],
        ["ablate", str(experiment), "--vary", "training.lr=0.1,0.2", "--out",
         str(tmp_path / "grid"), "--device", "xla"],
        ["train-classifier", "--data", str(tmp_path), "--backbone", "tiny_cnn", "--out",
         str(tmp_path / "clf"), "--device", "tpu:7"],
    ):  # fmt: skip
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("error: unknown device") and "auto, cpu, cuda" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_models_and_checkpoints_are_checked_before_any_folder_is_made(tmp_path: Path) -> None:
    """A backbone's weights file that does not fit it, and a fine-tuning checkpoint that
    fits next to nothing of the model, are one line each (exit 2) before any work."""
    experiment = tmp_path / "tiny.toml"
    experiment.write_text(TINY)
    foreign = tmp_path / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, foreign)
    cases = {
        "classifiers.resnet18.backbone_params: backbone 'resnet18' with weights = ": [
            "--set", f"classifiers.resnet18.backbone_params={{weights={json.dumps(str(foreign))}}}"
        ],
        "finetune.checkpoint: ": [
            "--set", 'finetune.inits=["checkpoint"]',
            "--set", f"finetune.checkpoint={json.dumps(str(foreign))}",
        ],
    }  # fmt: skip
    for message, settings in cases.items():
        out = tmp_path / "run"
        result = runner.invoke(app, ["run", str(experiment), "--out", str(out), *settings])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        problems = result.output.strip().splitlines()[1:]
        assert len(problems) == 1 and problems[0].strip().startswith(message), result.output
        assert str(foreign) in problems[0]
        assert not out.exists()


def test_all_problems_are_listed_at_once() -> None:
    document = _document(
        **{"finetune.bogus": "1", "fusion.name": "avg", "data.tasks.lungs.root": '"/nowhere"'}
    )
    with pytest.raises(DollError) as caught:
        validate_experiment(document)
    assert len(str(caught.value).splitlines()) == 4  # the heading and three problems


def test_cli_reports_bad_experiments_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TINY + "\n[report]\nfancy = true\n")
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "report.fancy: unknown key" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing started
    path.write_text("name = [unclosed")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "not valid TOML" in result.output
    result = runner.invoke(app, ["run", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "experiment file not found" in result.output


# -- stage keys and the cache ------------------------------------------------------------


def test_stage_keys_follow_settings_and_inputs_not_the_device(tmp_path: Path) -> None:
    def key(kind: str = "labels", data: str = "a", **settings: Any) -> str:
        config = LabelGenerationConfig(data=tmp_path, classifiers=(tmp_path / "c.pt",), **settings)
        return stage_key(kind, settings_key(config, kind), {"data": data})

    assert key(explainer="saliency", device="cpu") == key(explainer="saliency", device="cuda")
    assert key(explainer="saliency", workers=0) == key(explainer="saliency", workers=3)
    assert key(explainer="saliency") != key(explainer="gradcam")
    assert key(explainer="saliency") != key(explainer="saliency", data="b")
    assert key(explainer="saliency") != key("pretrain", explainer="saliency")


def test_the_cache_reuses_finished_and_refuses_interrupted_stages(tmp_path: Path) -> None:
    calls: list[bool] = []

    def work(folder: Path, resuming: bool) -> dict[str, Any]:
        calls.append(resuming)
        (folder / "out.txt").write_text("done")
        return {"value": 1}

    cache = StageCache(tmp_path)
    first = cache.run("kind", "a", {"x": 1}, {}, work)
    again = StageCache(tmp_path).run("kind", "a", {"x": 1}, {}, work)
    assert calls == [False] and again.reused and again.info == {"value": 1}
    assert again.folder == first.folder
    interrupted = cache.folder("kind", "b", stage_key("kind", {"x": 2}, {}))
    interrupted.mkdir()
    with pytest.raises(DollError, match="--resume"):
        StageCache(tmp_path).run("kind", "b", {"x": 2}, {}, work)
    StageCache(tmp_path, resume=True).run("kind", "b", {"x": 2}, {}, work)
    assert calls == [False, True]


# -- whole runs --------------------------------------------------------------------------


def test_a_run_writes_its_report(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = tiny_run
    for name in (
        "experiment.json",
        "results.json",
        "results.csv",
        "results.md",
        "log.txt",
        "figures/curves-organs.png",
        "figures/localization.png",
        "figures/labels-overlay.png",
    ):
        assert (out / name).is_file(), name
    assert results["computed"] == {
        "phantom": 1,
        "classifier": 2,
        "explain": 2,
        "labels": 1,
        "pretrain": 1,
        "finetune": 3,
    }
    rows = summary_rows(results)
    assert [(r["init"], r["budget"], r["seeds"]) for r in rows] == [
        ("random", 3, 1),
        ("classifier", 3, 1),
        ("doll", 3, 1),
    ]
    by_init = {run["init"]: run for run in results["finetune"]["runs"]}
    for row in rows:  # the table is the runs' own numbers
        assert row["miou"] == by_init[row["init"]]["test_miou"]
        test = json.loads((Path(by_init[row["init"]]["folder"]) / "test.json").read_text())
        assert test["test"]["miou"] == row["miou"]
    assert (out / "results.csv").read_text() == results_csv(rows)
    assert f"{rows[2]['miou']:.3f}" in (out / "results.md").read_text()
    assert 0 <= results["labels"]["localization"]["pointing_game"] <= 1
    assert results["environment"]["device"] == "cpu"
    assert json.loads((out / "experiment.json").read_text())["name"] == "tiny"
    assert not list((out / "stages").glob("*/state.pt"))  # finished: no resume state kept
    assert len(list((out / "stages").glob("finetune-*/best.pt"))) == 3


def test_a_second_run_reuses_every_stage_and_a_finetune_change_only_finetunes(
    tiny_run: tuple[Path, dict[str, Any]], tiny_experiment: Path, tmp_path: Path
) -> None:
    out, first = tiny_run
    experiment, document = load_experiment(tiny_experiment)
    again = run_experiment(experiment, document, tmp_path / "again", stages=out / "stages")
    assert again["computed"] == {}
    assert all(stage["reused"] for stage in again["stages"])
    assert again["finetune"]["summary"] == first["finetune"]["summary"]
    experiment, document = load_experiment(tiny_experiment, ["finetune.lr=0.003"])
    changed = run_experiment(experiment, document, tmp_path / "changed", stages=out / "stages")
    assert changed["computed"] == {"finetune": 3}


def test_report_rebuilds_the_files(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = tiny_run
    (out / "results.md").unlink()
    result = runner.invoke(app, ["report", str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert (out / "results.md").is_file() and "doll" in result.output
    result = runner.invoke(app, ["report", str(out / "figures")])
    assert result.exit_code == 2 and "no results.json" in result.output


def test_an_ablation_trains_classifiers_once_and_explains_once_per_explainer(
    tiny_experiment: Path, tmp_path: Path
) -> None:
    """Two explainers x two fusions: 2 classifiers trained, 2 x 2 classifier
    explanations, 4 fused stores, 4 pre-trainings."""
    tiny_experiment.with_name("grid.toml").write_text(
        TINY + '\n[ablation.vary]\n"fusion.name" = ["mean", "max"]\n'
    )
    report = run_ablation(
        tiny_experiment.with_name("grid.toml"),
        ["explanation.explainer=saliency,gradcam"],
        tmp_path / "ablation",
        overrides=['finetune.inits=["doll"]'],
        device="cpu",
    )
    rows = [point["row"] for point in report["points"]]
    totals: dict[str, int] = {}
    for point in sorted((tmp_path / "ablation" / "points").iterdir()):
        results = json.loads((point / "results.json").read_text())
        for kind, count in results["computed"].items():
            totals[kind] = totals.get(kind, 0) + count
    assert totals == {
        "phantom": 1,
        "classifier": 2,
        "explain": 4,
        "labels": 4,
        "pretrain": 4,
        "finetune": 4,
    }
    assert [(row["fusion.name"], row["explanation.explainer"]) for row in rows] == [
        ("mean", "saliency"),
        ("mean", "gradcam"),
        ("max", "saliency"),
        ("max", "gradcam"),
    ]
    assert all("organs doll n=3 mIoU" in row for row in rows)
    assert all(0 <= row["organs doll n=3 best val mIoU"] <= 1 for row in rows)
    table = (tmp_path / "ablation" / "ablation.md").read_text()
    assert table.startswith(ablation_markdown(rows)) and "| gradcam |" in table
    assert "Which explanation quality predicts" in table  # labels localization vs mIoU
    assert (tmp_path / "ablation" / "figures" / "labels-overlay.png").is_file()
    assert (tmp_path / "ablation" / "figures" / "localization.png").is_file()
    (tmp_path / "ablation" / "ablation.md").unlink()
    rebuilt = runner.invoke(app, ["report", str(tmp_path / "ablation")], env={"COLUMNS": "160"})
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (tmp_path / "ablation" / "ablation.md").read_text() == table


def test_an_ablation_with_evaluation_reports_metric_columns_and_their_correlations(
    tiny_experiment: Path, tmp_path: Path
) -> None:
    """Three explainers with ``[evaluation]``: one evaluation stage per explainer, its
    metrics in the ablation rows and the run's report, and the rank correlation of each
    metric with downstream mIoU across the grid."""
    tiny_experiment.with_name("evaluated.toml").write_text(
        TINY
        + '\n[evaluation]\nmetrics = ["sparseness", "pointing_game", "deletion"]\ncount = 4\n'
        + "bootstrap = 20\n[evaluation.params.deletion]\nsteps = 4\n"
    )
    report = run_ablation(
        tiny_experiment.with_name("evaluated.toml"),
        ["explanation.explainer=saliency,gradcam,input_x_gradient"],
        tmp_path / "ablation",
        overrides=['finetune.inits=["doll"]'],
        device="cpu",
    )
    rows = [point["row"] for point in report["points"]]
    assert all(isinstance(row["eval sparseness ↑"], float) for row in rows)
    assert all("eval deletion ↓" in row and "eval pointing_game ↑" in row for row in rows)
    assert len({row["eval sparseness ↑"] for row in rows}) == 3  # each explainer its own
    evaluated = sorted((tmp_path / "ablation" / "stages").glob("evaluate-*"))
    assert [p.name.split("-")[1] for p in evaluated] == ["gradcam", "input_x_gradient", "saliency"]
    for folder in evaluated:
        assert (folder / "evaluation.json").is_file() and (folder / "evaluation.png").is_file()
    saved = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    pairs = {(c["quality"], c["outcome"]) for c in saved["correlations"]}
    assert ("eval sparseness ↑", "organs doll n=3 mIoU") in pairs
    assert all(c["points"] == 3 for c in saved["correlations"])
    table = (tmp_path / "ablation" / "ablation.md").read_text()
    assert "Which explanation quality predicts good pre-training labels?" in table
    point = json.loads(
        (
            tmp_path / "ablation" / "points" / report["points"][0]["name"] / "results.json"
        ).read_text()
    )
    assert point["evaluation"]["metrics"]["deletion"]["higher_is_better"] is False
    markdown = (
        tmp_path / "ablation" / "points" / report["points"][0]["name"] / "results.md"
    ).read_text()
    assert "## Explanation quality" in markdown and "deletion ↓" in markdown


def test_fused_single_classifier_stores_match_joint_generation(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = tiny_run
    stores = sorted((out / "stages").glob("explain-*/labels"))
    fused = sorted((out / "stages").glob("labels-*/labels"))[0]
    joint_config = LabelStore(fused).generation_settings()
    joint = tmp_path / "joint"
    generate_labels(parse_config(LabelGenerationConfig, joint_config), joint)
    made, reference = LabelStore(fused), LabelStore(joint)
    assert made.ids == reference.ids
    for image_id in reference.ids:
        observations, maps = reference.labels(image_id)
        got_observations, got = made.labels(image_id)
        assert got_observations == observations
        if observations:  # at most one uint8 quantisation step apart
            assert int((got.int() - maps.int()).abs().max()) <= 1
    with pytest.raises(DollError, match="several classifiers"):
        fuse_stores([fused, *stores], "mean", tmp_path / "bad")


def test_doll_run_under_torchrun_with_two_gloo_processes(
    tiny_experiment: Path, tmp_path: Path
) -> None:
    """Both ranks run every stage together (DDP training, sharded labels); rank 0 alone
    decides reuse, writes stage records, the log and the report."""
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "doll_core.cli", "run", str(tiny_experiment), "--out", str(out),
        "--device", "cpu", "--quiet", "--set", 'finetune.inits=["doll"]',
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for attempt in ("first", "second"):
        done = subprocess.run(command, capture_output=True, text=True, env=environment,
                              check=False, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((out / "results.json").read_text())
        if attempt == "first":
            assert results["computed"] == {
                "phantom": 1, "classifier": 2, "explain": 2, "labels": 1, "pretrain": 1,
                "finetune": 1,
            }  # fmt: skip
        else:
            assert results["computed"] == {}
    log = (out / "log.txt").read_text().splitlines()
    assert sum("finished in" in line for line in log) == 2  # one writer per run
    stage_folders = [p for p in (out / "stages").iterdir() if p.name != LOCK_FILE]
    assert all((folder / "stage.json").is_file() for folder in stage_folders)


def test_a_budget_below_one_image_is_named_by_its_key() -> None:
    with pytest.raises(DollError, match=r"finetune\.budgets\.0"):
        validate_experiment(_document(**{"finetune.budgets": "[0]"}))


def test_finding_contrast_enters_the_phantom_key_only_away_from_its_default(
    tiny_experiment: Path,
) -> None:
    """Phantom stages written before ``finding_contrast`` existed keep their key."""
    from types import SimpleNamespace

    from doll_core.experiment.steps import data_sources

    class Recorded(Exception):
        pass

    def keyed_settings(overrides: list[str]) -> dict[str, Any]:
        experiment, _ = load_experiment(tiny_experiment, overrides)
        seen: dict[str, Any] = {}

        def run(kind: str, label: str, settings: dict[str, Any], *rest: Any, **kw: Any) -> Any:
            seen.update(settings)
            raise Recorded

        with pytest.raises(Recorded):
            data_sources(SimpleNamespace(cache=SimpleNamespace(run=run)), experiment)
        return seen

    default = keyed_settings([])
    assert "finding_contrast" not in default and "workers" not in default
    assert keyed_settings(["data.phantom.finding_contrast=1.0"]) == default
    assert keyed_settings(["data.phantom.finding_contrast=3.0"]) == {
        **default,
        "finding_contrast": 3.0,
    }


@pytest.mark.parametrize(
    "key", ["training.epochs", "finetune.image_size", "explanation.label_size"]
)
def test_true_is_not_a_number(key: str) -> None:
    """Issue 29, item 8: ``--set training.epochs=true`` ran 1 epoch (pydantic's lax mode
    reads true as 1)."""
    with pytest.raises(DollError, match=rf"{re.escape(key)}: expected a number, got true"):
        validate_experiment(_document(**{key: "true"}))


def test_a_huge_grid_is_refused_before_planning(tmp_path: Path) -> None:
    """Issue 29, item 8: a 10,000-point grid planned for 35 s and started weeks of work."""
    experiment = tmp_path / "tiny.toml"
    experiment.write_text(TINY)
    seeds = ",".join(str(i) for i in range(100))
    argv = [
        "ablate",
        str(experiment),
        "--vary",
        f"training.seed={seeds}",
        "--out",
        str(tmp_path / "a"),
    ]
    result = CliRunner().invoke(app, [*argv, "--vary", "finetune.epochs=1,2,3"])
    assert result.exit_code == 2, result.output
    assert "the grid has 300 points (100 (training.seed) x 3 (finetune.epochs))" in result.stderr
    assert not (tmp_path / "a").exists()


def test_two_fresh_processes_give_the_same_numbers(tmp_path: Path) -> None:
    """Issue 29, item 11: on one machine, with one thread count, two runs in fresh
    processes (other hash seeds, so no set or dict order can leak in; their own folders
    and image caches) give the same numbers, every one but times and paths."""
    from experiments_helpers import comparable

    experiment = tmp_path / "tiny.toml"
    experiment.write_text(TINY)
    results = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}"
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "2",
                       "PYTHONWARNINGS": "ignore"}  # fmt: skip
        command = [sys.executable, "-m", "doll_core.cli", "run", str(experiment), "--out",
                   str(out), "--quiet", "--device", "cpu"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=environment,
                              check=False, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        recorded = json.loads((out / "results.json").read_text())
        assert recorded["environment"]["cpu_threads"] == 2
        results.append(comparable(recorded, folders=False))
    assert results[0] == results[1]
