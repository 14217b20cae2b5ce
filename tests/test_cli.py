"""The ``doll`` command line: version, info, plugins list, and user-error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from experiments_helpers import TINY
from typer.testing import CliRunner

import doll_core
from doll_core.cli import app
from doll_core.errors import DollError

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"doll {doll_core.__version__}"


def test_every_command_has_help() -> None:
    for args in ([], ["info"], ["plugins"], ["plugins", "list"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, args
        assert "Usage: doll" in result.stdout


def test_plugins_list_table_shows_the_builtins() -> None:
    result = runner.invoke(app, ["plugins", "list"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for name in (
        "resnet18",
        "resnet50",
        "densenet121",
        "tiny_cnn",
        "xrv_densenet",
        "unet",
        "pspnet",
        "deeplabv3plus",
        "fpn",
        "chexpert",
        "nih",
        "padchest",
        "mimic",
        "csv",
        "multi",
        "segfolder",
        "jsrt",
        "covid-qu-ex",
    ):
        assert name in result.stdout
    assert result.stderr == ""


def test_the_table_shows_descriptions_literally(install_fake_distribution: Any) -> None:
    install_fake_distribution(
        "doll-brackets",
        {"brackets": "doll_brackets_mod"},
        {
            "doll_brackets_mod": """
                from doll_core import hookimpl

                class Sharp:
                    \"\"\"Gradient of logit[target] w.r.t. [bold]input[/bold].\"\"\"
                    def attribute(self, model, images, targets): ...

                @hookimpl
                def doll_register_explainers(register):
                    register("sharp", Sharp)
            """
        },
    )
    result = runner.invoke(app, ["plugins", "list", "--kind", "explainer"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Gradient of logit[target] w.r.t. [bold]input[/bold]." in result.stdout


def test_plugins_list_json_has_name_kind_distribution() -> None:
    result = runner.invoke(app, ["plugins", "list", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 48  # 31 of the first five kinds, 17 metrics
    assert all({"name", "kind", "distribution"} <= set(row) for row in rows)
    assert {row["distribution"] for row in rows} == {"doll"}
    seg = json.loads(runner.invoke(app, ["plugins", "list", "--kind", "seg_head", "--json"]).stdout)
    assert sorted(row["name"] for row in seg) == ["deeplabv3plus", "fpn", "pspnet", "unet"]


def test_an_unknown_kind_is_a_usage_error() -> None:
    result = runner.invoke(app, ["plugins", "list", "--kind", "explainers"])
    assert result.exit_code == 2
    assert "--kind" in result.stderr


def test_broken_plugins_are_warned_about_on_stderr(install_fake_distribution: Any) -> None:
    install_fake_distribution(
        "doll-broken",
        {"broken": "doll_broken_cli"},
        {"doll_broken_cli": "import not_a_module_anywhere\n"},
    )
    result = runner.invoke(app, ["plugins", "list", "--json"])
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)) == 48
    assert (
        "warning: plugin module 'doll_broken_cli' (entry point 'broken' of distribution "
        "'doll-broken'): import failed: ModuleNotFoundError" in result.stderr
    )


def test_info_json_reports_versions_device_and_plugin_counts() -> None:
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    import torch

    assert (
        data["packages"]["torch"] == torch.__version__.split("+")[0]
        or data["packages"]["torch"] == torch.__version__
    )
    assert data["device"]["threads"] == torch.get_num_threads()
    assert data["plugins"] == {
        "backbone": 5,
        "explainer": 8,
        "fusion": 5,
        "seg_head": 4,
        "dataset": 9,
        "metric": 17,
    }
    table = runner.invoke(app, ["info"], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "segmentation-models-pytorch" in table.stdout


@pytest.fixture
def broken_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``doll plugins list`` meet a user error deep inside."""

    def fail() -> None:
        raise DollError("plugin folder '/nope' is not readable")

    monkeypatch.setattr("doll_core.cli.plugins_cmd.get_registry", fail)


@pytest.mark.usefixtures("broken_registry")
def test_user_errors_are_one_line_and_exit_2() -> None:
    result = runner.invoke(app, ["plugins", "list"])
    assert result.exit_code == 2
    assert result.stderr == "error: plugin folder '/nope' is not readable\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("broken_registry")
def test_debug_lets_the_exception_through() -> None:
    result = runner.invoke(app, ["--debug", "plugins", "list"])
    assert isinstance(result.exception, DollError)
    assert result.exit_code == 1


def test_console_script_runs_as_a_subprocess() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", "from doll_core.cli import main; main()", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"doll {doll_core.__version__}"


# -- one grammar -------------------------------------------------------------------------------


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command below the click group ``group``, with its words."""
    found = []
    for name, command in sorted(group.commands.items()):
        words = (*prefix, name)
        found.append((words, command))
        if hasattr(command, "commands"):
            found += _commands(command, words)
    return found


def test_no_help_shows_a_value_after_a_flag() -> None:
    """``--resume``, ``--json``, ``--help``, ``--version``: flags take no value, so no
    ``<bool>`` follows them in any command's help."""
    import typer.main

    root = typer.main.get_command(app)
    commands = _commands(root)
    assert len(commands) > 20
    for words in [(), *(words for words, _ in commands)]:
        result = runner.invoke(app, [*words, "--help"], terminal_width=200)
        assert result.exit_code == 0, (words, result.output)
        assert "<bool>" not in result.output, words
    assert "--resume " in runner.invoke(app, ["run", "--help"], terminal_width=200).output


def test_every_set_takes_toml_values(small_phantom: Path, tmp_path: Path) -> None:
    """``--set`` reads a value as ``doll run`` does: TOML (an inline table too); a JSON
    object is not TOML, so it stays text and is refused by name."""
    out = tmp_path / "clf"
    arguments = ["train-classifier", "--data", str(small_phantom), "--backbone", "tiny_cnn",
                 "--out", str(out), "--epochs", "1", "--device", "cpu", "--set", "image_size=32",
                 "--set", "batch_size=16", "--set", "num_workers=0"]  # fmt: skip
    result = runner.invoke(app, [*arguments, "--set", "backbone_params={width = 4}"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["backbone_params"] == {"width": 4}
    lines = result.output.splitlines()
    assert sum(line.startswith("epoch 1") for line in lines) == 1  # no bar line besides
    refused = runner.invoke(app, [*arguments[:6], str(tmp_path / "other"), *arguments[7:],
                                  "--set", 'backbone_params={"width": 4}'])  # fmt: skip
    assert refused.exit_code == 2 and "backbone_params" in refused.output
    inspected = runner.invoke(
        app, ["data", "inspect", "chexpert", str(small_phantom), "--json",
              "--set", "frontal_only=true", "--set", "uncertainty={default = \"zeros\"}"],
    )  # fmt: skip
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.output)["splits"]["train"]["lateral"] == 0


def test_an_out_path_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """Issue 29, item 7: a file where ``--out`` needs a folder is exit 2 naming the path."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    experiment = tmp_path / "tiny.toml"
    experiment.write_text(TINY)
    for argv in (
        ["data", "phantom", "--out", str(a_file / "phantom"), "--n-train", "4", "--n-valid", "2"],
        ["run", str(experiment), "--out", str(a_file / "run"), "--quiet"],
        ["run", str(experiment), "--out", str(a_file), "--quiet"],
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "error: cannot use" in result.stderr and str(a_file) in result.stderr
        assert "Traceback" not in result.output
    assert a_file.read_text() == "x"


def test_train_classifier_options_take_their_defaults_from_the_config() -> None:
    """Issue 30, item 2: each default is stated once, in the settings field; the CLI shows
    and uses that one (it used to restate seven of them)."""
    import typer.main

    from doll_core.configuration import default_of
    from doll_core.training.config import ClassifierTrainingConfig

    command = typer.main.get_command(app).commands["train-classifier"]  # type: ignore[attr-defined]
    fields = {"size": "image_size", "workers": "num_workers", "batch_size": "batch_size"}
    checked = 0
    for parameter in command.params:
        field = fields.get(parameter.name, parameter.name)
        if field in ClassifierTrainingConfig.model_fields and parameter.default is not None:
            assert parameter.default == default_of(ClassifierTrainingConfig, field), field
            checked += 1
    assert checked >= 8


def test_compare_inits_defaults_are_an_experiments() -> None:
    """Issue 30, item 2: ``compare-inits`` took budgets 8, 32, all where an experiment
    takes 8, all."""
    import typer.main

    from doll_core.configuration import default_of
    from doll_core.experiment.sections import FinetuneSection

    command = typer.main.get_command(app).commands["compare-inits"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in command.params}
    assert defaults["budget"] == [str(b) for b in default_of(FinetuneSection, "budgets")]
    assert defaults["seeds"] == len(default_of(FinetuneSection, "seeds"))
