"""``doll doctor``: every kind of damage is named with its file, and the plan it gives for
``--resume`` is what ``doll run --resume`` then really recomputes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from experiments_helpers import TINY, file_states
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.doctor import DoctorReport, Finding, Step, diagnose
from doll_core.errors import DollError
from doll_core.experiment.loading import load_experiment, validate_experiment
from doll_core.experiment.runner import run_experiment
from doll_core.experiment.stages import recorded_device
from doll_core.locking import LOCK_FILE

#: The tiny experiment of the fault suite with 4 shards per label store, one fine-tuning
#: and no figures but the curves: phantom, 2 classifiers, 2 explain stages, labels,
#: pretrain, finetune.
SMALL_OVERRIDES = [
    'name="small"',
    "explanation.shard_size=8",
    'finetune.inits=["doll"]',
    "report.overlay_images=0",
    "report.localization=false",
]

cli = CliRunner()


class Interrupted(Exception):
    """Stands for a kill in the middle of a stage."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run, shared by every test (each works on its own copy)."""
    folder = tmp_path_factory.mktemp("doctor")
    (folder / "small.toml").write_text(TINY)
    experiment, document = load_experiment(folder / "small.toml", SMALL_OVERRIDES)
    run_experiment(experiment, document, folder / "run", device="cpu")
    return folder / "run"


def _link_or_copy(source: str, target: str) -> None:
    """Checkpoints and shards are only ever replaced (atomic writes, and the damage
    below), never changed in place, so the copies may share them; the rest is copied."""
    if source.endswith(".pt"):
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


@pytest.fixture
def run(reference: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(reference, copy, copy_function=_link_or_copy)
    return copy


def stage(run: Path, prefix: str) -> Path:
    (found,) = [p for p in (run / "stages").iterdir() if p.name.startswith(prefix + "-")]
    return found


def replace(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file (never through a shared hard link)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def truncate(path: Path, size: int) -> None:
    replace(path, path.read_bytes()[:size])


def edit_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.unlink()
    path.write_text(json.dumps(data))


def about(report: DoctorReport, path: Path, root: Path) -> list[Finding]:
    name = str(path.relative_to(root))
    return [f for f in report.findings if f.path == name]


def severities(report: DoctorReport, path: Path, root: Path) -> set[str]:
    return {f.severity for f in about(report, path, root)}


def steps(report: DoctorReport) -> dict[str, str]:
    return {s.stage: s.action for s in report.plan}


# -- healthy ---------------------------------------------------------------------------------


def test_a_healthy_run_exits_0_with_nothing_to_redo(reference: Path) -> None:
    result = cli.invoke(app, ["doctor", str(reference)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--resume would redo: nothing (planned from experiment.json)" in result.output
    assert "healthy" in result.output
    data = json.loads(cli.invoke(app, ["doctor", str(reference), "--json"]).output)
    assert data["healthy"] and data["problems"] == 0 and data["warnings"] == 0
    assert data["resume"] == {"planned_from": "experiment.json", "steps": []}
    checked = {f["path"] for f in data["findings"] if f["severity"] == "ok"}
    stage_folders = [p for p in (reference / "stages").iterdir() if p.name != LOCK_FILE]
    assert {str(p.relative_to(reference)) for p in stage_folders} <= checked


# -- label stores ----------------------------------------------------------------------------


def _store(run: Path) -> Path:
    return stage(run, "explain-saliency_resnet18") / "labels"


def _bad_checksum(store: Path) -> Path:
    edit_json(store / "manifest.json", lambda m: m["shards"]["1"].update(sha256="0" * 64))
    return store / "shard-00001.pt"


def _flipped_byte(store: Path) -> Path:
    path = store / "shard-00002.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    replace(path, bytes(data))
    return path


def _other_shard(store: Path) -> Path:
    """Another shard's file under this one's name, its manifest entry made to match: only
    reading it tells."""
    from doll_core.digests import sha256_of

    path = store / "shard-00003.pt"
    replace(path, (store / "shard-00000.pt").read_bytes())
    digest, size = sha256_of(path), path.stat().st_size
    edit_json(store / "manifest.json", lambda m: m["shards"]["3"].update(sha256=digest, bytes=size))
    return path


def _missing(store: Path) -> Path:
    (store / "shard-00001.pt").unlink()
    return store / "shard-00001.pt"


def _truncated(store: Path) -> Path:
    truncate(store / "shard-00002.pt", 500)
    return store / "shard-00002.pt"


#: damage -> (make it, return the damaged shard; words of the finding about that shard)
DAMAGE = {
    "missing shard": (_missing, "missing shard"),
    "truncated shard": (_truncated, "size is 500 bytes"),
    "checksum": (_bad_checksum, "SHA-256 does not match"),
    "flipped byte": (_flipped_byte, "SHA-256 does not match"),
    "another shard": (_other_shard, "holds shard 0, listed as 3"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_label_store_names_the_shard(run: Path, damage: str) -> None:
    store = _store(run)
    make, words = DAMAGE[damage]
    path = make(store)
    # The bare store: problems name the shard, the plan regenerates exactly it.
    report = diagnose(store)
    assert report.kind == "label store" and not report.healthy
    (finding,) = about(report, path, store)
    assert finding.severity == "problem" and words in finding.message
    assert [(s.stage, s.action) for s in report.plan] == [(path.name, "redo")]
    # Inside a run: the same finding; stage.json's checksums cover the store, so --resume
    # continues the stage, remaking that shard.
    report = diagnose(run)
    assert "problem" in severities(report, path, run)
    assert steps(report) == {store.parent.name: "continue"}
    (step,) = report.plan
    assert f"makes {path.name}" in step.detail and "labels/" in step.detail
    assert report.dependents[store.parent.name] == [
        stage(run, "labels").name,
        stage(run, "pretrain").name,
        stage(run, "finetune").name,
    ]


def test_orphan_and_temporary_files_are_warnings(run: Path) -> None:
    store = _store(run)
    shutil.copy(store / "shard-00000.pt", store / "shard-00007.pt")
    (store / ".shard-00002.pt.tmp-4242").write_bytes(b"half a shard")
    (stage(run, "pretrain") / ".best.pt.tmp-4242").write_bytes(b"")
    (stage(run, "phantom") / ".phantom.partial-4242").mkdir()  # a killed phantom's staging
    result = cli.invoke(app, ["doctor", str(run)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for path, words in (
        (store / "shard-00007.pt", "orphan shard"),
        (store / ".shard-00002.pt.tmp-4242", "temporary file"),
        (stage(run, "pretrain") / ".best.pt.tmp-4242", "temporary file"),
        (stage(run, "phantom") / ".phantom.partial-4242", "temporary file or folder"),
    ):
        (line,) = [x for x in lines if str(path.relative_to(run)) in x]
        assert "warning" in line and words in line
    assert "--resume would redo: nothing" in result.output
    assert "healthy: no problems, 4 warning(s)" in result.output


def test_a_manifest_without_checksums_says_so(run: Path) -> None:
    store = _store(run)
    edit_json(store / "manifest.json", lambda m: [e.pop("sha256") for e in m["shards"].values()])
    result = cli.invoke(app, ["doctor", str(store), "--json"])
    assert result.exit_code == 0, result.output
    (finding,) = json.loads(result.output)["findings"][:1]
    assert finding["path"] == "manifest.json" and finding["severity"] == "warning"
    assert "no checksum recorded for 4 shard(s)" in finding["message"]


# -- checkpoints and stage folders -----------------------------------------------------------


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older stage.json"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "pickled", "missing"])
def test_a_damaged_checkpoint_is_named_with_its_dependents(
    run: Path, damage: str, recorded: bool
) -> None:
    """A finished stage whose stage.json recorded its files' SHA-256 is recomputed by
    --resume; one from an older DoLL (no checksums) is reused as it is."""
    folder = stage(run, "classifier-resnet18")
    if not recorded:
        edit_json(folder / "stage.json", lambda d: d.pop("files"))
    path = folder / "best.pt"
    if damage == "truncated":
        truncate(path, path.stat().st_size // 2)
    elif damage == "empty":
        replace(path, b"")
    elif damage == "pickled":
        path.unlink()
        torch.save({"format": "doll-classifier", "loader": Path("x")}, path)
    else:
        path.unlink()
    result = cli.invoke(app, ["doctor", str(run), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    messages = [f["message"] for f in report["findings"] if f["path"] == str(path.relative_to(run))]
    expected = {
        "truncated": "does not load",
        "empty": "empty (0 bytes)",
        "pickled": "pickled Python objects",
        "missing": "missing",
    }[damage]
    assert any(expected in m for m in messages), messages
    if recorded:
        assert any("stage.json" in m for m in messages), messages
        changed = "is missing" if damage == "missing" else "no longer matches its SHA-256 in"
        detail = f"best.pt {changed}{'' if damage == 'missing' else ' stage.json'}"
        assert report["resume"]["steps"] == [
            {
                "stage": folder.name,
                "action": "redo",
                "detail": f"{detail}; no state.pt yet: training starts from epoch 0",
            }
        ]
    else:
        assert report["resume"]["steps"] == [
            {
                "stage": folder.name,
                "action": "reuse damaged",
                "detail": "finished, so it is reused as it is; delete stage.json to have it redone",
            }
        ]
    assert report["dependents"][folder.name] == [
        stage(run, "explain-saliency_resnet18").name,
        stage(run, "labels").name,
        stage(run, "pretrain").name,
        stage(run, "finetune").name,
    ]
    # The stage folder alone says the same.
    alone = diagnose(folder)
    assert alone.kind == "stage" and "problem" in severities(alone, path, folder)


def test_an_unreadable_stage_json_is_recomputed(run: Path) -> None:
    done = stage(run, "labels") / "stage.json"
    replace(done, b'{"kind": "lab')
    report = diagnose(run)
    assert "problem" in severities(report, done, run)
    (step,) = report.plan
    assert (step.stage, step.action) == (done.parent.name, "redo")
    assert (
        step.detail == "its stage.json is unreadable; a fused store is rewritten whole (4 shards)"
    )


def test_a_training_state_is_continued_or_named_when_broken(run: Path) -> None:
    folder = stage(run, "pretrain")
    (folder / "stage.json").unlink()
    torch.save(
        {"format": "doll-training-state", "format_version": 1, "epoch": 1, "config": {"epochs": 2}},
        folder / "state.pt",
    )
    report = diagnose(run)
    assert report.healthy
    (step,) = report.plan
    assert (step.stage, step.action) == (folder.name, "continue")
    assert step.detail == "from state.pt after epoch 1 of 2"
    truncate(folder / "state.pt", 100)
    report = diagnose(run)
    assert "problem" in severities(report, folder / "state.pt", run)
    assert steps(report) == {folder.name: "fails"}


# -- versions and settings -------------------------------------------------------------------


def test_other_versions_are_warnings(run: Path) -> None:
    done = stage(run, "phantom") / "stage.json"
    edit_json(done, lambda d: d.update(doll="0.0.1"))
    edit_json(run / "results.json", lambda r: r["environment"].update(torch="1.0.0"))
    result = cli.invoke(app, ["doctor", str(run), "--json"])
    assert result.exit_code == 0
    warnings = {f["path"]: f["message"] for f in json.loads(result.output)["findings"]}
    assert "finished by DoLL 0.0.1" in warnings[str(done.relative_to(run))]
    assert "torch 1.0.0 (now " in warnings["results.json"]


def test_an_invalid_experiment_json_is_a_problem(run: Path) -> None:
    edit_json(run / "experiment.json", lambda d: d["finetune"].update(inits=["nonsense"]))
    report = diagnose(run)
    (finding,) = about(report, run / "experiment.json", run)
    assert finding.severity == "problem" and "not a valid experiment" in finding.message
    assert report.planned_from == "stage folders" and not report.plan


def test_changed_settings_give_new_stages(run: Path) -> None:
    """A config change (here: one more fine-tuning epoch in experiment.json) gives the
    fine-tuning stage a new key: doctor names the setting (the plan's test below checks
    that --resume runs exactly that stage)."""
    old = stage(run, "finetune")
    edit_json(run / "experiment.json", lambda d: d["finetune"].update(epochs=3))
    report = diagnose(run)
    assert report.healthy
    ((name, step),) = [(s.stage, s) for s in report.plan]
    assert step.action == "run" and name != old.name and name.startswith("finetune-")
    assert "settings changed: epochs: 2 -> 3" in step.detail
    (warning,) = [f for f in about(report, old, run) if f.severity == "warning"]
    assert "config/version mismatch" in warning.message


def test_the_plan_replays_the_device_doll_run_recorded(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``doll run`` records its device in ``run.json``; doctor replays the run on it, and a
    run folder of an older DoLL (no ``run.json``) on the experiment's own device."""
    import importlib

    # the module, not the function doll_core.doctor exports under the same name
    module = importlib.import_module("doll_core.doctor.diagnose")
    assert json.loads((run / "run.json").read_text()) == {"device": "cpu"}
    devices: list[str | None] = []
    original = module.plan_experiment

    def recording(document: Any, stages: Path, source: str, device: str | None = None) -> Any:
        devices.append(device)
        return original(document, stages, source, device)

    monkeypatch.setattr(module, "plan_experiment", recording)
    assert diagnose(run).healthy
    (run / "run.json").unlink()
    assert recorded_device(run) is None
    older = diagnose(run)
    assert older.healthy and not older.plan
    assert devices == ["cpu", None]


def test_an_ablation_folder_is_checked_with_its_shared_stages(run: Path, tmp_path: Path) -> None:
    ablation = tmp_path / "ablation"
    (ablation / "points" / "a").mkdir(parents=True)
    for name in ("experiment.json", "results.json", "log.txt"):
        shutil.copy(run / name, ablation / "points" / "a" / name)
    (run / "stages").rename(ablation / "stages")
    (ablation / "ablation.json").write_text("{}")
    report = diagnose(ablation)
    assert report.kind == "ablation" and report.healthy and not report.warnings
    assert report.planned_from == "experiment.json" and not report.plan
    finetune = stage(ablation, "finetune")
    shutil.rmtree(finetune)
    assert [(s.stage, s.action, s.detail) for s in diagnose(ablation).plan] == [
        (finetune.name, "run", "not started yet")
    ]


# -- the plan against a real --resume --------------------------------------------------------


def _unlocked(states: dict[str, Any]) -> dict[str, Any]:
    """File states without the lock files (each taker records itself there)."""
    return {k: v for k, v in states.items() if not k.endswith(LOCK_FILE)}


def _resume(run: Path) -> set[str]:
    """Run ``doll run --resume`` on the folder's experiment.json; the stages it computed."""
    document = json.loads((run / "experiment.json").read_text())
    results = run_experiment(
        validate_experiment(document), document, run, resume=True, device="cpu"
    )
    return {Path(r["folder"]).name for r in results["stages"] if not r["reused"]}


def test_the_plan_is_what_resume_recomputes(
    run: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import doll_core.segmentation.pretrain as module

    # A kill in the second pre-training epoch.
    pretrain, finetune = stage(run, "pretrain"), stage(run, "finetune")
    shutil.rmtree(pretrain)
    original = module.pretrain

    def pretrain_then_stop(config: Any, out: Path, **options: Any) -> Any:
        def stop(epoch: int, step: int) -> None:
            if epoch == 1 and step == 0:
                raise Interrupted

        return original(config, out, **{**options, "on_step": stop})

    monkeypatch.setattr(module, "pretrain", pretrain_then_stop)
    with pytest.raises(Interrupted):
        _resume(run)
    monkeypatch.setattr(module, "pretrain", original)
    # An explain stage killed while it rewrote two shards; a classifier checkpoint and
    # the phantom's stage.json damaged after they finished; a finished store with a
    # corrupted shard that no checksum in stage.json covers (a stage.json written before
    # DoLL recorded its store's files).
    explain = stage(run, "explain-saliency_resnet18")
    (explain / "stage.json").unlink()
    (explain / "labels" / "shard-00001.pt").unlink()
    truncate(explain / "labels" / "shard-00002.pt", 300)
    classifier = stage(run, "classifier-tiny")
    truncate(classifier / "best.pt", 1000)
    phantom = stage(run, "phantom")
    replace(phantom / "stage.json", b"")
    damaged = stage(run, "explain-saliency_tiny")
    edit_json(
        damaged / "stage.json",
        lambda d: d.update(files={k: v for k, v in d["files"].items() if "/" not in k}),
    )
    _flipped_byte(damaged / "labels")
    # And fine-tuning is to run one epoch longer: a new key, so a new stage.
    edit_json(run / "experiment.json", lambda d: d["finetune"].update(epochs=3))

    result = cli.invoke(app, ["doctor", str(run), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    plan = {s["stage"]: Step(**s) for s in report["resume"]["steps"]}
    (new_finetune,) = [n for n in plan if n.startswith("finetune-")]
    assert {name: s.action for name, s in plan.items()} == {
        phantom.name: "redo",
        classifier.name: "redo",
        explain.name: "continue",
        damaged.name: "reuse damaged",
        pretrain.name: "continue",
        new_finetune: "run",
    }
    assert plan[pretrain.name].detail == "from state.pt after epoch 1 of 2"
    assert plan[explain.name].detail == (
        "keeps 2 of 4 shards, makes shard-00001.pt (missing), "
        "shard-00002.pt (size differs from the manifest)"
    )
    assert plan[new_finetune].detail == (f"settings changed: epochs: 2 -> 3 (was {finetune.name})")
    assert plan[phantom.name].detail == (
        "its stage.json is unreadable; the phantom is written again from the start"
    )
    assert plan[classifier.name].detail == (
        "best.pt no longer matches its SHA-256 in stage.json; "
        "no state.pt yet: training starts from epoch 0"
    )

    recomputed = _resume(run)
    assert recomputed == {n for n, s in plan.items() if s.action in ("continue", "redo", "run")}
    for name in ("shard-00001.pt", "shard-00002.pt"):  # the same bytes as before
        regenerated = (explain / "labels" / name).read_bytes()
        original_store = stage(reference, "explain-saliency_resnet18") / "labels"
        assert regenerated == (original_store / name).read_bytes()
    after = diagnose(run)
    assert {s.stage: s.action for s in after.plan} == {damaged.name: "reuse damaged"}


# -- user errors -----------------------------------------------------------------------------


def test_paths_that_are_not_runs_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for path, words in (
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "file.txt", "is a file"),
        (tmp_path / "empty", "is not a run folder"),
    ):
        result = cli.invoke(app, ["doctor", str(path)])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("error: ") and words in line
        with pytest.raises(DollError, match=words):
            diagnose(path)


def test_help_gives_the_exit_codes() -> None:
    result = cli.invoke(app, ["doctor", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "0 healthy" in result.output and "1 problems found" in result.output
    assert "2 not a run or store" in result.output
    assert "--resume" in result.output and "--json" in result.output


def _bytes_outside(root: Path, run: Path) -> dict[str, bytes]:
    """Every file under ``root`` but not in ``run``, by content."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.is_relative_to(run)
    }


def _unlocked(states: dict[str, Any]) -> dict[str, Any]:
    """File states without the lock files (each taker records itself there)."""
    return {k: v for k, v in states.items() if not k.endswith(LOCK_FILE)}


def _resume_by_cli(run: Path, experiment: Path, *extra: str) -> Any:
    sets = [item for override in SMALL_OVERRIDES for item in ("--set", override)]
    argv = ["run", str(experiment), "--out", str(run), "--resume", "--quiet", *sets, *extra]
    return cli.invoke(app, argv)


@pytest.mark.parametrize("planted", [".doll.lock", "log.txt", "figures", "stage folder"])
def test_a_planted_link_stops_the_run_and_no_byte_outside_changes(
    run: Path, tmp_path: Path, planted: str
) -> None:
    """Issue 29, item 1: a link in a run folder leading outside it is refused before
    anything is written, and ``doll doctor`` names it."""
    experiment = tmp_path / "small.toml"
    experiment.write_text(TINY)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kept.txt").write_text("kept")
    if planted in (".doll.lock", "log.txt"):
        link = run / planted
        link.unlink(missing_ok=True)
        link.symlink_to(notes)
    elif planted == "figures":
        shutil.rmtree(run / "figures", ignore_errors=True)
        link = run / "figures"
        link.symlink_to(elsewhere, target_is_directory=True)
    else:
        link = stage(run, "finetune")
        shutil.copytree(link, elsewhere / link.name)
        shutil.rmtree(link)
        link.symlink_to(elsewhere / link.name, target_is_directory=True)
    before = _bytes_outside(tmp_path, run)
    inside = _unlocked(file_states([run]))
    result = _resume_by_cli(run, experiment)
    assert result.exit_code == 2, result.output
    assert f"{link.name} is a symbolic link" in result.stderr
    assert _bytes_outside(tmp_path, run) == before
    assert _unlocked(file_states([run])) == inside
    if planted != ".doll.lock":  # the lock itself is refused before doctor could read it
        report = diagnose(run)
        assert any(
            f.severity == "problem" and "symbolic link" in f.message for f in report.findings
        )


def test_a_refused_run_changes_no_record(run: Path, tmp_path: Path) -> None:
    """Issue 29, item 2: a run refused before work (here: an unavailable device) leaves
    ``experiment.json`` and ``run.json`` as they were, so the finished stages keep their
    meaning for ``doll evaluate`` and ``doll doctor``."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    experiment = tmp_path / "small.toml"
    experiment.write_text(TINY)
    before = _unlocked(file_states([run]))
    result = _resume_by_cli(
        run, experiment, "--set", 'explanation.explainer="gradcam"', "--device", "cuda:0"
    )
    assert result.exit_code == 2 and "CUDA" in result.stderr, result.output
    assert _unlocked(file_states([run])) == before
    assert not [s for s in diagnose(run).plan if s.action in ("run", "redo")]


def test_a_run_locks_its_stage_folder_even_inside_it(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29, item 8: another run naming ``RUN/stages`` with ``--stages`` waits for the
    lock of the run that owns it, so two runs never write one stage at once."""
    from doll_core.experiment import runner

    taken: list[tuple[Path, str]] = []

    class Stop(Exception):
        pass

    def recording(folder: Path, what: str = "run folder") -> Any:
        taken.append((Path(folder), what))
        if len(taken) == 2:
            raise Stop
        return contextlib.nullcontext()

    monkeypatch.setattr(runner, "folder_lock", recording)
    experiment, document = load_experiment_text(tmp_path)
    with pytest.raises(Stop):
        run_experiment(experiment, document, run, device="cpu", resume=True)
    assert taken == [(run, "run folder"), (run / "stages", "stage folder")]


def load_experiment_text(folder: Path) -> tuple[Any, dict[str, Any]]:
    (folder / "small.toml").write_text(TINY)
    return load_experiment(folder / "small.toml", SMALL_OVERRIDES)


def test_every_reader_checks_a_checkpoint_against_its_stage_record(run: Path) -> None:
    """Issue 29, item 3: 4 KB of a classifier's ``best.pt`` flipped is refused by ``doll
    evaluate`` and ``doll explain`` (which loaded it and scored), as doctor flags it."""
    checkpoint = stage(run, "classifier-resnet18") / "best.pt"
    data = bytearray(checkpoint.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    replace(checkpoint, bytes(data))
    evaluated = cli.invoke(app, ["evaluate", str(run), "--count", "2", "--bootstrap", "0"])
    assert evaluated.exit_code == 2, evaluated.output
    assert "best.pt (classifier checkpoint) does not match the SHA-256" in evaluated.stderr
    assert not (run / "evaluation").exists()
    image = next((run / "phantom").rglob("*.png"), None) or next(run.rglob("*.jpg"))
    explained = cli.invoke(
        app,
        [
            "explain",
            "--checkpoint",
            str(checkpoint),
            "--image",
            str(image),
            "--out",
            str(run / "x.png"),
        ],
    )
    assert explained.exit_code == 2 and "does not match the SHA-256" in explained.stderr
    assert any("best.pt" in f.path and f.severity == "problem" for f in diagnose(run).findings)


def test_evaluate_and_report_write_a_run_only_without_planted_links(
    run: Path, tmp_path: Path
) -> None:
    """Issue 29, item 1: ``doll evaluate RUN`` and ``doll report RUN`` write into the run
    under its lock, so a planted ``evaluation`` or ``figures`` link is refused."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(run / "evaluation", ignore_errors=True)
    (run / "evaluation").symlink_to(elsewhere, target_is_directory=True)
    argv = ["evaluate", str(run), "--count", "2", "--bootstrap", "0", "--metric", "sparseness"]
    evaluated = cli.invoke(app, argv)
    assert evaluated.exit_code == 2 and "evaluation is a symbolic link" in evaluated.stderr
    reported = cli.invoke(app, ["report", str(run)])
    assert reported.exit_code == 2 and "evaluation is a symbolic link" in reported.stderr
    assert not list(elsewhere.iterdir())


def test_plan_shows_settings_and_what_would_run_without_running(run: Path, tmp_path: Path) -> None:
    """Issue 30, item 2: ``doll plan`` prints the resolved settings with their help text
    and which stages ``doll run`` would compute or reuse; it writes nothing."""
    experiment = tmp_path / "small.toml"
    experiment.write_text(TINY)
    sets = [item for override in SMALL_OVERRIDES for item in ("--set", override)]
    before = _unlocked(file_states([run]))
    same = cli.invoke(app, ["plan", str(experiment), "--out", str(run), *sets, "--json"])
    assert same.exit_code == 0, same.output
    shown = json.loads(same.stdout)
    assert {step["action"] for step in shown["stages"]} == {"reuse"}
    assert sorted(p.name for p in (run / "stages").iterdir() if p.name != LOCK_FILE) == sorted(
        step["name"] for step in shown["stages"]
    )
    settings = {s["key"]: s for s in shown["settings"]}
    assert settings["finetune.budgets"]["value"] == "[3]"
    assert settings["name"]["value"] == '"small"'
    engine = settings["explanation.engine.max_rows"]  # a dataclass's fields, one by one
    assert engine["value"] == "64" and engine["help"].startswith("rows")
    more = cli.invoke(app, ["plan", str(experiment), "--out", str(run), *sets, "--json",
                            "--set", "finetune.seeds=[0, 1]"])  # fmt: skip
    steps = json.loads(more.stdout)["stages"]
    to_run = [s["name"].split("-")[1] for s in steps if s["action"] == "run"]
    assert to_run == ["organs_doll_n3_seed1"], to_run
    fresh = cli.invoke(app, ["plan", str(experiment), "--out", str(tmp_path / "new"), *sets])
    assert fresh.exit_code == 0 and "stage(s) to compute, 0 to reuse" in fresh.stdout
    assert _unlocked(file_states([run])) == before and not (tmp_path / "new").exists()


def test_a_killed_runs_half_written_cache_entries_are_removed(run: Path, tmp_path: Path) -> None:
    """A run killed while it wrote a decoded image leaves ``.NAME.npz.tmp-PID`` in the
    run's image cache; the next run in the folder (which holds its lock) removes it."""
    experiment = tmp_path / "small.toml"
    experiment.write_text(TINY)
    leftover = run / "image-cache" / "ab" / ".abcdef.npz.tmp-4242"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half")
    result = _resume_by_cli(run, experiment)
    assert result.exit_code == 0, result.output
    assert not leftover.exists()
