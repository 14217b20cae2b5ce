"""Loading never runs code from a file; trusted old files convert once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from doll_core.checkpoint import load_classifier
from doll_core.cli import app
from doll_core.errors import DollError
from doll_core.payloads import safe_torch_load
from doll_core.registry import get_registry

runner = CliRunner()


class _RunsCode:
    """Unpickling this object would create a file: the classic pickle attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    for load in (
        lambda p: safe_torch_load(p, "weights file"),
        load_classifier,
        lambda p: get_registry().create("backbone", "resnet18", weights=str(p)).build(14, 1),
    ):
        with pytest.raises(DollError, match=r"convert-weights .* --trusted"):
            load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_trusted_whole_model_file_converts_into_loadable_weights(tmp_path: Path) -> None:
    model = torchvision.models.resnet18(weights=None)
    torch.save({"model": model, "epoch": 7, "note": "old format"}, tmp_path / "old.pt")
    with pytest.raises(DollError, match="pickled Python objects"):
        get_registry().create("backbone", "resnet18", weights=str(tmp_path / "old.pt")).build(14, 3)

    refused = runner.invoke(
        app, ["convert-weights", str(tmp_path / "old.pt"), str(tmp_path / "new.pt")]
    )
    assert refused.exit_code == 2 and "--trusted" in refused.output
    assert not (tmp_path / "new.pt").exists()

    done = runner.invoke(
        app, ["convert-weights", str(tmp_path / "old.pt"), str(tmp_path / "new.pt"), "--trusted"]
    )
    assert done.exit_code == 0, done.output
    assert "dropped epoch, note" in done.output
    state = safe_torch_load(tmp_path / "new.pt", "weights file")
    assert set(state) == set(model.state_dict())
    classifier = get_registry().create("backbone", "resnet18", weights=str(tmp_path / "new.pt"))
    built = classifier.build(14, 3)
    assert torch.equal(built.conv1.weight, model.conv1.weight)

    again = runner.invoke(
        app, ["convert-weights", str(tmp_path / "old.pt"), str(tmp_path / "new.pt"), "--trusted"]
    )
    assert again.exit_code == 2 and "exists" in again.output


def test_text_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DollError, match="not a readable DoLL weights file"):
        safe_torch_load(tmp_path / "text.pt", "weights file")
    with pytest.raises(DollError, match="weights file not found"):
        safe_torch_load(tmp_path / "absent.pt", "weights file")
