"""No write through a planted link (issue 29, item 1): the run log, figures and stage
folders refuse a symbolic link where DoLL writes, and leave its target untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from doll_core.errors import DollError
from doll_core.experiment.runner import RunLog
from doll_core.experiment.stages import StageCache, stage_key
from doll_core.plotting import pyplot, save_figure


def _notes(tmp_path: Path) -> Path:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    return notes


def test_the_run_log_is_never_appended_through_a_link(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.txt").symlink_to(notes)
    with pytest.raises(DollError, match=r"log\.txt is a symbolic link"):
        RunLog(run / "log.txt")("a line")
    assert notes.read_text() == "my notes\n"
    (run / "log.txt").unlink()
    RunLog(run / "log.txt")("a line")
    assert (run / "log.txt").read_text().endswith("a line\n")


def test_a_figure_never_goes_through_a_link(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    figures = tmp_path / "run" / "figures"
    figures.mkdir(parents=True)
    (figures / "curves.png").symlink_to(notes)
    plt = pyplot()
    with pytest.raises(DollError, match=r"curves\.png is a symbolic link"):
        save_figure(plt.figure(), figures / "curves.png", dpi=20)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run" / "linked").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DollError, match="linked is a symbolic link"):
        save_figure(plt.figure(), tmp_path / "run" / "linked" / "x.png", dpi=20)
    assert notes.read_text() == "my notes\n" and not list(elsewhere.iterdir())
    written = save_figure(plt.figure(), figures / "fine.png", dpi=20)
    assert written.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in figures.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_linked_stage_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = StageCache(tmp_path / "stages")
    folder = cache.folder("classifier", "tiny", stage_key("classifier", {"a": 1}, {}))
    folder.parent.mkdir(parents=True)
    folder.symlink_to(elsewhere, target_is_directory=True)

    def work(out: Path, resuming: bool) -> dict[str, str]:
        (out / "best.pt").write_text("weights")
        return {}

    with pytest.raises(DollError, match="is a symbolic link"):
        cache.run("classifier", "tiny", {"a": 1}, {}, work)
    assert not list(elsewhere.iterdir())
