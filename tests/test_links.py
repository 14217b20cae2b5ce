"""No write through a planted link (issue 29, item 1): the run log, figures and stage
folders refuse a symbolic link where DoLL writes, and leave its target untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from doll_core.errors import DollError
from doll_core.experiment.runner import RunLog
from doll_core.experiment.stages import StageCache, stage_key
from doll_core.links import links_leaving
from doll_core.locking import folder_lock
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
    assert notes.read_text() == "my notes\n"
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


def test_a_folder_the_user_names_by_a_link_is_used(tmp_path: Path) -> None:
    """``--out`` may be a link (to a scratch disk): only links inside it are refused."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "run").symlink_to(scratch, target_is_directory=True)
    with folder_lock(tmp_path / "run"):
        RunLog(tmp_path / "run" / "log.txt")("a line")
        save_figure(pyplot().figure(), tmp_path / "run" / "figures" / "f.png", dpi=20)
    assert (scratch / "log.txt").read_text().endswith("a line\n")
    assert (scratch / "figures" / "f.png").is_file()


def test_a_locked_folder_with_a_link_leading_outside_is_refused(tmp_path: Path) -> None:
    """Every writer of a run or stage folder takes its lock first: a planted link to a
    folder or file outside is refused there, before a byte is written."""
    notes = _notes(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    (run / "evaluation" / "evaluation.png").symlink_to(notes)
    (run / "figures").symlink_to(elsewhere, target_is_directory=True)
    (run / "inside").symlink_to(run / "evaluation", target_is_directory=True)  # stays inside
    assert links_leaving(run) == [run / "evaluation" / "evaluation.png", run / "figures"]
    refused = r"evaluation\.png is a symbolic link .*\(and 1 more\)"
    with pytest.raises(DollError, match=refused), folder_lock(run):
        (run / "log.txt").write_text("never")
    assert not (run / "log.txt").exists() and notes.read_text() == "my notes\n"
    assert not list(elsewhere.iterdir())
    (run / "evaluation" / "evaluation.png").unlink()
    (run / "figures").unlink()
    with folder_lock(run):
        pass
