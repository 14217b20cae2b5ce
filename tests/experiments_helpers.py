"""The tiny experiment and what tests of whole runs share (test_experiment, test_faults)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from doll_core.labels.store import LabelStore

TESTS = Path(__file__).resolve().parent

#: The smallest experiment with every stage: seconds on 2 cores.
TINY = """
name = "tiny"
[data.phantom]
n_train = 32
n_valid = 16
n_organs = 10
n_infection = 0
size = 64
[data.tasks.organs]
phantom = "organs"
[training]
image_size = 32
epochs = 1
batch_size = 16
num_workers = 0
[classifiers.resnet18]
backbone = "resnet18"
[classifiers.tiny]
backbone = "tiny_cnn"
[explanation]
explainer = "saliency"
label_size = 16
[pretrain]
encoder_from = "resnet18"
image_size = 32
epochs = 2
batch_size = 8
num_workers = 0
[finetune]
inits = ["random", "classifier", "doll"]
budgets = [3]
seeds = [0]
image_size = 32
epochs = 2
eval_interval = 2
batch_size = 3
num_workers = 0
"""

_PHANTOM_DATA = """[data.phantom]
n_train = 32
n_valid = 16
n_organs = 10
n_infection = 0
size = 64
"""


def tiny_on_data(classification: Path, organs: Path) -> str:
    """The tiny experiment on data folders (a CheXpert-layout root and a segfolder root)
    instead of a phantom it generates."""
    text = TINY.replace(
        _PHANTOM_DATA, f"[data.classification]\nroot = {json.dumps(str(classification))}\n"
    )
    text = text.replace('phantom = "organs"', f"root = {json.dumps(str(organs))}")
    assert "phantom" not in text
    return text


#: The order in which ``doll run`` computes its stage kinds.
STAGE_KINDS = ("phantom", "classifier", "explain", "labels", "pretrain", "finetune")

#: Result keys that hold stage bookkeeping: they differ between two runs of the same
#: experiment by design (as do times and rates: keys ending in ``seconds``,
#: ``_per_second`` or ``_fraction``). The folders a run names are relative to its run
#: folder, so two runs in different places record the same ones.
_NOT_RESULTS = {"stages", "environment", "computed"}
#: Result keys that name folders.
_FOLDERS = {"folder", "labels_folder", "phantom", "evaluation_folder"}
TIMES = ("seconds", "_per_second", "_fraction")
#: Atomic writes (``.NAME.tmp-PID``) and the phantom's staging folder (``.NAME.partial-PID``).
TEMPORARY = re.compile(r"^\..+\.(tmp|partial)-\d+$")


def comparable(results: Any, *, folders: bool = True) -> Any:
    """``results`` without times, rates and stage bookkeeping: what a rerun must reproduce
    exactly; without the folders it names too unless ``folders`` (for runs whose stages
    are named otherwise, e.g. by another explainer plugin)."""
    skip = _NOT_RESULTS if folders else _NOT_RESULTS | _FOLDERS
    if isinstance(results, dict):
        return {
            key: comparable(value, folders=folders)
            for key, value in results.items()
            if key not in skip and not key.endswith(TIMES)
        }
    if isinstance(results, list):
        return [comparable(value, folders=folders) for value in results]
    return results


def stage_kind(folder: Path) -> str:
    return folder.name.split("-")[0]


def finished_stages(stages: Path) -> list[Path]:
    return sorted(p for p in stages.iterdir() if (p / "stage.json").is_file())


def unfinished_stages(stages: Path) -> list[Path]:
    return sorted(p for p in stages.iterdir() if p.is_dir() and not (p / "stage.json").exists())


def file_states(roots: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """``path -> (size, mtime_ns)`` of every file among or under ``roots``: finished work
    that nobody touched keeps exactly these."""
    states = {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                info = path.stat()
                states[str(path.relative_to(root.parent))] = (info.st_size, info.st_mtime_ns)
    return states


def copy_stages(source: Path, target: Path, kinds: Iterable[str]) -> list[Path]:
    """Copy the finished stage folders of ``kinds`` from one stage folder to another (as if
    an earlier run had finished them there); returns the copies."""
    wanted = set(kinds)
    target.mkdir(parents=True, exist_ok=True)
    copies = []
    for folder in finished_stages(source):
        if stage_kind(folder) in wanted:
            copies.append(target / folder.name)
            shutil.copytree(folder, copies[-1])
    return copies


def temporaries(root: Path) -> list[Path]:
    """Leftovers of interrupted atomic writes anywhere under ``root``."""
    return sorted(p for p in root.rglob(".*") if TEMPORARY.match(p.name))


def store_labels(store: Path) -> dict[str, tuple[list[int], list[list[list[int]]]]]:
    """Every image's observations and uint8 maps of a label store."""
    opened = LabelStore(store)
    labels = {}
    for image_id in opened.ids:
        observations, maps = opened.labels(image_id)
        labels[image_id] = (observations, maps.tolist())
    return labels


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a ``doll`` child process that can import the test helpers."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore", **extra}


def doll_in_child() -> list[str]:
    """The command that starts ``doll`` in a child process through :mod:`fault_ticks`
    (which kills it at the point its environment names)."""
    return [sys.executable, "-c", "import fault_ticks; fault_ticks.main()"]
