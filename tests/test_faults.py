"""Fault injection through the real CLI: kill -9 inside every stage kind, a full disk during
shard writes, a plugin that raises mid-run, corrupted checkpoints and truncated images.

Each test checks that nothing already finished is lost (finished stages and shards are
kept byte for byte and reused) and that the results after recovery equal a clean run's.
The clean run (``reference``) is computed once per module; every other run starts from
copies of its finished stages where the fault comes later in the pipeline.

Faults injected (23):

- kill -9 at a seeded random point inside each of the 6 stage kinds (phantom, classifier,
  explain, labels, pretrain, finetune), each followed by a refused plain rerun and a
  ``--resume``: 6;
- a full disk: at 3 points of ``doll labels generate`` (first shard, a middle shard, the
  manifest) and at a shard write of the fused-labels stage of ``doll run``: 4;
- an explainer plugin that raises on its 6th call (inside the second explain stage): 1;
- a corrupted checkpoint: truncated, zeroed or garbled ``best.pt`` of a finished classifier
  and of the pre-training (6), a garbled classifier recovered with ``--resume`` and
  checked downstream (1), a garbled ``stage.json`` (1): 8;
- a garbled shard of a finished explanation stage, redone with ``--resume``: 1;
- truncated images (a CheXpert-layout training image and a segmentation test image): one
  run with ``on_error = "skip"``, one with ``"fail"`` for each file: 3.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from experiments_helpers import (
    STAGE_KINDS,
    TIMES,
    TINY,
    child_environment,
    comparable,
    copy_stages,
    doll_in_child,
    file_states,
    finished_stages,
    stage_kind,
    store_labels,
    temporaries,
    tiny_on_data,
    unfinished_stages,
)
from fault_ticks import KILL_AT, KILL_KIND, Ticks, ticking
from typer.testing import CliRunner

import doll_core.atomic
from doll_core.cli import app
from doll_core.configuration import parse_config
from doll_core.digests import sha256_of
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.generate import generate_labels
from doll_core.labels.store import LabelStore
from doll_core.locking import LOCK_FILE
from doll_core.payloads import safe_torch_load
from doll_core.segmentation.config import FinetuneConfig
from doll_core.segmentation.splits import SPLIT_SEED
from doll_core.segmentation.splits import seeded_split as split_indices

pytestmark = pytest.mark.faults

runner = CliRunner()

#: Seed of the kill points (each stage kind draws its own point from it).
SEED = 9
#: The tiny experiment with two classifier epochs (so a resumed classifier continues from
#: a saved epoch), shards of 8 images (so a label stage is killed between shards), the
#: fusion that weighs each classifier by its validation AUROC (which a moved run must take
#: from its own stages), the two fine-tunings that start from earlier stages, and no
#: overlay figure (the slowest part of a report).
SETTINGS = ("training.epochs=2", "explanation.shard_size=8", 'fusion.name="auc_weighted"',
            'finetune.inits=["classifier","doll"]', "report.overlay_images=0")  # fmt: skip
#: The environment that gives a child process one torch thread (see ``one_thread``).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Reference:
    """The clean run: its experiment file, run folder, results and ticks (per stage kind)."""

    experiment: Path
    out: Path
    results: dict[str, Any]
    ticks: Ticks

    @property
    def stages(self) -> Path:
        return self.out / "stages"


def run_args(experiment: Path, out: Path, *extra: str) -> list[str]:
    """``doll run`` arguments of the fault experiment."""
    settings = [part for setting in SETTINGS for part in ("--set", setting)]
    return ["run", str(experiment), "--out", str(out), "--device", "cpu", "--quiet",
            *settings, *extra]  # fmt: skip


def fused_store(out: Path) -> Path:
    (store,) = sorted((out / "stages").glob("labels-*/labels"))
    return store


def results_of(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "results.json").read_text()))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread here and in the child processes (``ONE_THREAD``): the same numbers
    everywhere (a reduction's order follows the thread count), and no threads spinning
    against each other on 2 shared cores (faster than two, for these tiny models)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One clean run, counting the ticks of every stage kind (see :mod:`fault_ticks`)."""
    root = tmp_path_factory.mktemp("faults")
    experiment = root / "tiny.toml"
    experiment.write_text(TINY)
    out = root / "clean"
    with ticking(Ticks()) as ticks:
        result = runner.invoke(app, run_args(experiment, out))
    assert result.exit_code == 0, result.output
    assert set(ticks.counts) == set(STAGE_KINDS)
    assert all(ticks.saves[kind] for kind in STAGE_KINDS if kind != "phantom")
    return Reference(experiment, out, results_of(out), ticks)


def assert_equals_reference(
    out: Path, reference: Reference, *, folders: bool = True
) -> dict[str, Any]:
    """The run in ``out`` finished with the reference's results and labels (and in the
    same stage folders, unless not ``folders``), and left no temporary file and no resume
    state behind."""
    results = results_of(out)
    assert comparable(results, folders=folders) == comparable(reference.results, folders=folders)
    assert store_labels(fused_store(out)) == store_labels(fused_store(reference.out))
    assert temporaries(out) == []
    assert not list((out / "stages").glob("*/state.pt"))
    return results


# -- kill -9 ------------------------------------------------------------------------------


def test_kill_9_inside_every_stage_then_resume(reference: Reference, tmp_path: Path) -> None:
    """One run folder, killed six times: ``doll run`` is killed at a seeded random tick of
    the phantom, then ``doll run --resume`` in the classifiers, the explanations, the
    fused labels, the pre-training and the fine-tunings in turn, each time at a seeded
    random tick after the stage saved progress (a training epoch, a label shard); before
    each resume, a plain rerun is refused. Every kill must keep what was finished
    (untouched, reused) and every resume must finish what was cut from where it was;
    the last one ends as the clean run."""
    out = tmp_path / "run"
    stages, log = out / "stages", out / "log.txt"
    interrupted: Path | None = None
    for kind in STAGE_KINDS:
        done = finished_stages(stages) if stages.is_dir() else []
        kept = file_states(done)
        logged = len(log.read_text().splitlines()) if log.is_file() else 0
        total = reference.ticks.counts[kind]
        kill_at = random.Random(f"{SEED}:{kind}").choice(reference.ticks.after_progress(kind))
        resume = ["--resume"] if interrupted is not None else []
        killed = subprocess.run(
            [*doll_in_child(), *run_args(reference.experiment, out, *resume)],
            env=child_environment(**ONE_THREAD, **{KILL_KIND: kind, KILL_AT: str(kill_at)}),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        where = f"kill -9 at tick {kill_at} of {total} in {kind}"
        assert killed.returncode == -signal.SIGKILL, (where, killed.stderr[-3000:])
        assert file_states(done) == kept, where  # nothing finished was rewritten, or lost
        lines = log.read_text().splitlines()[logged:]
        for folder in done:
            assert any(f"reused {folder.name}" in line for line in lines), (where, folder)
        if interrupted is not None:  # the stage cut by the previous kill was finished
            assert any(f"resuming in {interrupted.name}" in line for line in lines), where
            assert (interrupted / "stage.json").is_file(), where
        (interrupted,) = unfinished_stages(stages)
        assert stage_kind(interrupted) == kind, where
        progress = [*interrupted.glob("state.pt"), *interrupted.glob("labels/shard-*.pt")]
        if kind == "phantom":  # written aside, renamed at the end: only the staging is left
            assert list(interrupted.glob(".phantom.partial-*")) and not progress, where
        else:  # killed after saving progress: the resume continues from it
            assert progress, where

        done = finished_stages(stages)
        kept = file_states(done)
        refused = runner.invoke(app, run_args(reference.experiment, out))
        assert refused.exit_code == 2, (where, refused.output)
        assert interrupted.name in refused.output and "pass --resume" in refused.output
        assert "Traceback" not in refused.output
        assert unfinished_stages(stages) == [interrupted] and file_states(done) == kept

    # the last resume runs elsewhere: the run folder, killed inside a fine-tuning, is moved
    moved = tmp_path / "elsewhere" / "deeper" / "run"
    moved.parent.mkdir(parents=True)
    shutil.move(out, moved)
    out, stages, log = moved, moved / "stages", moved / "log.txt"
    interrupted, done = stages / interrupted.name, [stages / f.name for f in done]
    kept = file_states(done)
    logged = len(log.read_text().splitlines())
    resumed = runner.invoke(app, run_args(reference.experiment, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert file_states(done) == kept
    lines = log.read_text().splitlines()[logged:]
    assert any(f"resuming in {interrupted.name}" in line for line in lines)
    results = assert_equals_reference(out, reference)
    reused = {Path(stage["folder"]).name for stage in results["stages"] if stage["reused"]}
    assert reused == {folder.name for folder in done}
    finished_finetunes = sum(stage_kind(folder) == "finetune" for folder in done)
    assert results["computed"] == {"finetune": 2 - finished_finetunes}


# -- two processes, one run folder ----------------------------------------------------------


def _headers(out: Path) -> int:
    """How many runs have started in the run folder's log."""
    log = out / "log.txt"
    lines = log.read_text().splitlines() if log.is_file() else []
    return sum("  doll run " in line for line in lines)


def _holder_pid(out: Path) -> int | None:
    """The process id the run folder's lock file names, once it names one."""
    try:
        return int(json.loads((out / LOCK_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_second_doll_run_on_a_busy_folder_is_refused_naming_the_holder(
    reference: Reference, tmp_path: Path
) -> None:
    """``doll run X & doll run X --resume``: the second is refused at once with exit 2 and
    one line naming the first's process id and host, and writes nothing; once the first is
    killed (-9), the OS has released its lock and ``--resume`` ends as the clean run."""
    out = tmp_path / "run"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from doll_core.cli import main; main()",
            *run_args(reference.experiment, out),
        ],
        env=child_environment(**ONE_THREAD),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _holder_pid(out) != child.pid or _headers(out) == 0:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.05)
        refused = runner.invoke(app, run_args(reference.experiment, out, "--resume"))
        assert refused.exit_code == 2, refused.output
        lines = refused.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.output
        assert f"process {child.pid} on host {socket.gethostname()}" in lines[0]
        assert child.poll() is None  # the first was still working: the refusal was the lock's
        assert _headers(out) == 1  # the first's alone: the second never started
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    resumed = runner.invoke(app, run_args(reference.experiment, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert_equals_reference(out, reference)


# -- a moved run folder ---------------------------------------------------------------------

#: Files that record times (and, for ``stage.json``, when and whether a stage resumed):
#: compared as :func:`~experiments_helpers.comparable` JSON or not at all, never as bytes.
TIMED = {"stage.json", "metrics.json", "generation.json", "results.json", "results.md",
         "log.txt", LOCK_FILE}  # fmt: skip


def file_bytes(root: Path) -> dict[str, str]:
    """``relative path -> SHA-256`` of every file under ``root`` but the timed ones."""
    return {
        str(path.relative_to(root)): sha256_of(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in TIMED
    }


def reported(out: Path) -> tuple[Any, str]:
    """What a finished run reports, times and stage bookkeeping aside: ``results.json``
    (its paths kept) and ``results.md`` above its table of stage times."""
    results = results_of(out)
    for key in ("environment", "computed", "stages"):
        results.pop(key)
    markdown = (out / "results.md").read_text()
    return comparable_times(results), markdown.split("## Stages")[0]


def comparable_times(value: Any) -> Any:
    """``value`` without the keys that hold times and rates (paths are kept)."""
    if isinstance(value, dict):
        return {k: comparable_times(v) for k, v in value.items() if not k.endswith(TIMES)}
    if isinstance(value, list):
        return [comparable_times(v) for v in value]
    return value


def test_a_moved_run_folder_resumes_and_reports_as_in_place(
    reference: Reference, tmp_path: Path
) -> None:
    """``cp -a run moved; rm -rf run``: the copy, resumed, reuses every stage and reports
    exactly what the original reports in place (paths included); with its fused labels,
    pre-training and fine-tunings deleted, it recomputes them from its own stages (the
    AUC-weighted fusion's AUROCs, the pre-training's images) byte for byte as the clean
    run made them."""
    original = tmp_path / "original"
    shutil.copytree(reference.out, original, symlinks=True)
    in_place = runner.invoke(app, run_args(reference.experiment, original, "--resume"))
    assert in_place.exit_code == 0, in_place.output
    expected, expected_files = reported(original), file_bytes(original)
    assert not any(str(original) in text for text in map(str, expected))

    moved = tmp_path / "elsewhere" / "deeper" / "moved"
    shutil.copytree(original, moved, symlinks=True)
    shutil.rmtree(original)
    resumed = runner.invoke(app, run_args(reference.experiment, moved, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert reported(moved) == expected
    assert file_bytes(moved) == expected_files
    assert all(stage["reused"] for stage in results_of(moved)["stages"])

    recomputed = [p for p in (moved / "stages").iterdir() if stage_kind(p) in
                  ("labels", "pretrain", "finetune")]  # fmt: skip
    assert len(recomputed) == 4
    for folder in recomputed:
        shutil.rmtree(folder)
    again = runner.invoke(app, run_args(reference.experiment, moved, "--resume"))
    assert again.exit_code == 0, again.output
    assert results_of(moved)["computed"] == {"labels": 1, "pretrain": 1, "finetune": 2}
    assert file_bytes(moved / "stages") == file_bytes(reference.stages)
    assert_equals_reference(moved, reference)


# -- a full disk ----------------------------------------------------------------------------


class _FullHandle:
    """A file handle on a disk with ``room`` bytes left: a bigger ``write`` fails with
    ENOSPC, naming no file, as a real ``write()`` does."""

    def __init__(self, handle: IO[bytes], room: int) -> None:
        self.handle, self.room, self.written = handle, room, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


@contextmanager
def full_disk(name: str, room: int = 512) -> Iterator[list[Path]]:
    """The disk fills up during the first atomic write of a file called ``name`` (after
    ``room`` bytes of it); yields the paths that failed."""
    real = doll_core.atomic.atomic_write
    failed: list[Path] = []

    def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
        path = Path(path)
        if path.name == name and not failed:
            failed.append(path)
            real(path, lambda handle: write(_FullHandle(handle, room)))  # type: ignore[arg-type]
        else:
            real(path, write)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(doll_core.atomic, "atomic_write", atomic_write)
        yield failed


def assert_disk_full_message(output: str, path: Path) -> None:
    assert f"the disk is full while writing {path} " in output, output
    assert "--resume" in output and "Traceback" not in output


def labels_args(data: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    """``doll labels generate``: 24 images in 6 shards of 4."""
    return ["labels", "generate", "--data", str(data), "--classifier", str(checkpoint),
            "--out", str(out), "--explainer", "saliency", "--set", "shard_size=4",
            "--set", "label_size=16", "--set", "device=cpu", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def clean_store(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("clean-store") / "labels"
    result = runner.invoke(app, labels_args(small_phantom, tiny_checkpoints[0], out))
    assert result.exit_code == 0, result.output
    return out


def shard_digests(store: Path) -> dict[str, str]:
    return {p.name: sha256_of(p) for p in sorted(store.glob("shard-*.pt"))}


@pytest.mark.parametrize("name", ["shard-00000.pt", "shard-00002.pt", "manifest.json"])
def test_a_full_disk_during_label_generation(
    name: str,
    small_phantom: Path,
    tiny_checkpoints: list[Path],
    clean_store: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "labels"
    with full_disk(name) as failed:
        result = runner.invoke(app, labels_args(small_phantom, tiny_checkpoints[0], out))
    assert failed == [out / name]
    assert result.exit_code == 1, result.output
    assert_disk_full_message(result.output, out / name)
    written = sorted(out.glob("shard-*.pt"))
    assert temporaries(out) == []  # the cut write left nothing behind
    expected = shard_digests(clean_store)
    complete = name == "manifest.json"
    assert {p.name: sha256_of(p) for p in written} == (
        expected if complete else {k: v for k, v in expected.items() if k < name}
    )
    store = LabelStore(out)  # opens: the manifest is rebuilt from the complete shards
    assert store.manifest["complete"] is complete
    assert sorted(store.manifest["shards"]) == [str(i) for i in range(len(written))]
    kept = file_states(written)

    refused = runner.invoke(app, labels_args(small_phantom, tiny_checkpoints[0], out))
    assert refused.exit_code == 2 and "pass --resume" in refused.output
    resumed = runner.invoke(app, labels_args(small_phantom, tiny_checkpoints[0], out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert shard_digests(out) == expected  # the same bytes as an uninterrupted run
    assert file_states(written) == kept  # finished shards were not written again
    assert store_labels(out) == store_labels(clean_store)


def test_a_full_disk_inside_doll_run(reference: Reference, tmp_path: Path) -> None:
    """The disk fills up while the fused-labels stage writes its second shard (every other
    stage is a copy of the clean run's, so that only this one is computed)."""
    out = tmp_path / "run"
    copy_stages(reference.stages, out / "stages", [k for k in STAGE_KINDS if k != "labels"])
    done = finished_stages(out / "stages")
    kept = file_states(done)
    with full_disk("shard-00001.pt") as failed:
        result = runner.invoke(app, run_args(reference.experiment, out))
    assert result.exit_code == 1, result.output
    (path,) = failed
    assert_disk_full_message(result.output, path)
    (interrupted,) = unfinished_stages(out / "stages")
    assert stage_kind(interrupted) == "labels" and path.parent == interrupted / "labels"
    assert temporaries(out) == [] and file_states(done) == kept
    resumed = runner.invoke(app, run_args(reference.experiment, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert file_states(done) == kept
    results = assert_equals_reference(out, reference)
    assert results["computed"] == {"labels": 1}


# -- a plugin that raises mid-run ---------------------------------------------------------

FLAKY_PLUGIN = '''
"""Saliency, except that the N-th call raises (N = $DOLL_TEST_FLAKY_AT; unset: never)."""

import os

from doll_core import hookimpl
from doll_plugins.explainers.gradients import Saliency

calls = 0


class Flaky(Saliency):
    def attribute(self, model, images, targets):
        global calls
        calls += 1
        if calls == int(os.environ.get("DOLL_TEST_FLAKY_AT", "0")):
            raise RuntimeError(f"injected fault in call {calls}")
        return super().attribute(model, images, targets)


@hookimpl
def doll_register_explainers(register):
    register("flaky", Flaky)
'''


def test_a_plugin_that_raises_mid_run(
    reference: Reference,
    install_fake_distribution: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The explainer raises on its 6th call: 4 batches (shards of 8) per classifier, so
    the first classifier's labels are finished and the second's first shard is written.
    The maps equal saliency's, so the run must end as the clean one."""
    install_fake_distribution("doll-flaky", {"flaky": "doll_flaky"}, {"doll_flaky": FLAKY_PLUGIN})
    out = tmp_path / "run"
    stages = out / "stages"
    copy_stages(reference.stages, stages, ["phantom", "classifier"])
    (from_classifier,) = reference.stages.glob("finetune-organs_classifier_*")  # no labels
    shutil.copytree(from_classifier, stages / from_classifier.name)
    args = run_args(reference.experiment, out, "--set", "explanation.explainer=flaky")
    monkeypatch.setenv("DOLL_TEST_FLAKY_AT", "6")
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "explainer 'flaky' (from distribution 'doll-flaky') raised RuntimeError: " \
        "injected fault in call 6 in attribute" in failed.output  # fmt: skip
    assert "--resume" in failed.output and "Traceback" not in failed.output
    (interrupted,) = unfinished_stages(stages)
    assert interrupted.name.startswith("explain-flaky_tiny-")
    assert [p.name for p in sorted((interrupted / "labels").glob("shard-*.pt"))] == [
        "shard-00000.pt"
    ]
    done = finished_stages(stages)
    assert any(p.name.startswith("explain-flaky_resnet18-") for p in done)
    kept = file_states([*done, interrupted / "labels" / "shard-00000.pt"])

    monkeypatch.delenv("DOLL_TEST_FLAKY_AT")  # the plugin is fixed
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert file_states([*done, interrupted / "labels" / "shard-00000.pt"]) == kept
    results = assert_equals_reference(out, reference, folders=False)  # named by "flaky"
    assert results["computed"] == {"explain": 1, "labels": 1, "pretrain": 1, "finetune": 1}


# -- corrupted checkpoints ------------------------------------------------------------------


def corrupt(path: Path, how: str) -> None:
    """Truncate, zero or garble (same size, bytes in the middle changed) a file."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        path.write_bytes(bytes(len(data)))
    else:  # torch.load reads such a file without complaint: only a checksum tells
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64])
                         + data[middle + 64 :])  # fmt: skip


@pytest.mark.parametrize("how", ["truncated", "zeroed", "garbled"])
@pytest.mark.parametrize("kind", ["classifier", "pretrain"])
def test_a_corrupted_checkpoint_is_never_used(
    kind: str, how: str, reference: Reference, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    copy_stages(reference.stages, out / "stages", STAGE_KINDS[: STAGE_KINDS.index(kind) + 1])
    folders = {"classifier": "classifier-resnet18-*", "pretrain": "pretrain-*"}
    (checkpoint,) = sorted((out / "stages").glob(f"{folders[kind]}/best.pt"))
    corrupt(checkpoint, how)
    result = runner.invoke(app, run_args(reference.experiment, out))
    assert result.exit_code == 2, result.output
    assert f"{checkpoint} does not match the checksum in stage.json" in result.output
    assert "pass --resume to recompute the stage" in result.output
    assert "Traceback" not in result.output
    assert not list((out / "stages").glob("finetune-*"))  # nothing went on with it


def test_a_corrupted_stage_record_is_not_trusted(reference: Reference, tmp_path: Path) -> None:
    out = tmp_path / "run"
    copy_stages(reference.stages, out / "stages", ["phantom", "classifier"])
    (record,) = sorted((out / "stages").glob("classifier-tiny-*/stage.json"))
    corrupt(record, "garbled")
    result = runner.invoke(app, run_args(reference.experiment, out))
    assert result.exit_code == 2, result.output
    assert f"{record} is not readable" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output


def test_a_corrupted_classifier_is_recomputed_with_resume(
    reference: Reference, tmp_path: Path
) -> None:
    """A garbled ``best.pt`` of a finished classifier: ``--resume`` trains it again (the
    same weights), and the fine-tuning that starts from it gets the clean run's result."""
    out = tmp_path / "run"
    copy_stages(reference.stages, out / "stages", STAGE_KINDS)
    (folder,) = sorted((out / "stages").glob("classifier-resnet18-*"))
    corrupt(folder / "best.pt", "garbled")
    (downstream,) = sorted((out / "stages").glob("finetune-organs_classifier_*"))
    shutil.rmtree(downstream)  # so that something reads the checkpoint again
    others = [p for p in finished_stages(out / "stages") if p != folder]
    kept = file_states(others)
    result = runner.invoke(app, run_args(reference.experiment, out, "--resume"))
    assert result.exit_code == 0, result.output
    assert f"{folder.name}: {folder / 'best.pt'} does not match" in (out / "log.txt").read_text()
    assert file_states(others) == kept
    results = assert_equals_reference(out, reference)
    assert results["computed"] == {"classifier": 1, "finetune": 1}
    clean = reference.stages / folder.name / "best.pt"
    recomputed = safe_torch_load(folder / "best.pt", "checkpoint")["state_dict"]
    for key, value in safe_torch_load(clean, "checkpoint")["state_dict"].items():
        assert torch.equal(recomputed[key], value), key


def test_a_corrupted_shard_of_a_finished_label_stage_is_redone_with_resume(
    reference: Reference, tmp_path: Path
) -> None:
    """A garbled shard of a finished explanation stage (its store is under ``stage.json``'s
    checksums): a plain rerun refuses naming the shard and ``--resume``; ``--resume``
    makes that shard again (the others are kept), and the run ends as the clean run."""
    out = tmp_path / "run"
    copy_stages(reference.stages, out / "stages", STAGE_KINDS)
    (folder,) = sorted((out / "stages").glob("explain-*_tiny-*"))
    shard = folder / "labels" / "shard-00001.pt"
    corrupt(shard, "garbled")
    others = sorted(p for p in (folder / "labels").glob("shard-*.pt") if p != shard)
    kept = file_states(others)
    refused = runner.invoke(app, run_args(reference.experiment, out))
    assert refused.exit_code == 2, refused.output
    assert f"{shard} does not match the checksum" in refused.output
    assert "pass --resume to recompute the stage" in refused.output
    result = runner.invoke(app, run_args(reference.experiment, out, "--resume"))
    assert result.exit_code == 0, result.output
    assert file_states(others) == kept
    assert sha256_of(shard) == sha256_of(reference.stages / folder.name / "labels" / shard.name)
    results = assert_equals_reference(out, reference)
    assert results["computed"] == {"explain": 1}


# -- truncated images -----------------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_truncated_images_are_skipped_and_recorded_or_stop_the_run(
    reference: Reference, tmp_path: Path
) -> None:
    """One CheXpert-layout training image and one segmentation test image are cut short.
    ``on_error = "skip"``: every stage that reads them records path and reason, no label
    is made for the image, and every other image's labels are those of the intact data.
    ``on_error = "fail"``: the stage that meets the file stops with a message naming it,
    and the stages finished before it are kept."""
    (phantom,) = sorted(reference.stages.glob("phantom-*/phantom"))
    data = tmp_path / "data"
    shutil.copytree(phantom, data)
    rows = (data / "CheXpert-v1.0-small" / "train.csv").read_text().splitlines()
    image_id = rows[3].split(",")[0]
    image = data / image_id
    truncate(image)
    _, test = split_indices(10, FinetuneConfig.model_fields["test_fraction"].default, SPLIT_SEED)
    organ_id = f"organ_{test[0] + 1:04d}"
    organ = data / "organs" / "images" / f"{organ_id}.png"
    truncate(organ)
    experiment = tmp_path / "truncated.toml"
    experiment.write_text(tiny_on_data(data, data / "organs"))
    out = tmp_path / "run"

    one_epoch = ("--set", "training.epochs=1", "--set", 'finetune.inits=["doll"]')
    result = runner.invoke(app, run_args(experiment, out, *one_epoch))
    assert result.exit_code == 0, result.output
    stages = out / "stages"

    def recorded(records: list[dict[str, str]], path: Path) -> list[dict[str, str]]:
        return [r for r in records if r["path"] == str(path)]

    for folder in sorted(stages.glob("classifier-*")):
        lines = (folder / "skipped.jsonl").read_text().splitlines()
        records = recorded([json.loads(line) for line in lines], image)
        assert len(records) == 1
        assert all(r["id"] == image_id and "corrupt" in r["reason"] for r in records)
    for store in sorted(stages.glob("*/labels")):
        opened = LabelStore(store)
        (record,) = recorded(list(opened.skipped()), image)
        assert record["id"] == image_id and image_id not in opened.ids
    for folder in sorted(stages.glob("finetune-*")):
        test_result = json.loads((folder / "test.json").read_text())
        (record,) = recorded(test_result["skipped"], organ)
        assert record["id"] == organ_id and "corrupt" in record["reason"]
    for store in sorted(stages.glob("explain-*/labels")):  # the others: as from intact data
        config = dict(LabelStore(store).generation_settings(), data=str(phantom))
        intact = tmp_path / "intact" / store.parent.name
        generate_labels(parse_config(LabelGenerationConfig, config), intact)
        expected = store_labels(intact)
        assert set(expected) - set(store_labels(store)) == {image_id}
        expected.pop(image_id)
        assert store_labels(store) == expected

    failed = runner.invoke(
        app, run_args(experiment, out, *one_epoch, "--set", 'training.on_error="fail"')
    )
    assert failed.exit_code == 2, failed.output
    assert f"cannot read {image}: corrupt" in failed.output and "Traceback" not in failed.output
    done = finished_stages(stages)
    kept = file_states(done)
    failed = runner.invoke(
        app, run_args(experiment, out, *one_epoch, "--set", 'finetune.on_error="fail"')
    )
    assert failed.exit_code == 2, failed.output
    assert f"cannot read {organ}: corrupt" in failed.output and "Traceback" not in failed.output
    assert file_states(done) == kept
