"""Every stage key that ``doll doctor`` plans for each file in ``experiments/`` is the one
recorded in ``tests/data/stage-keys.json``: a change to how settings enter stage keys
(issue 30 derives them from the settings' own declarations) must leave every user's
finished stages reusable.

Keys hash the data folders' resolved paths, which differ between checkouts, so the plan is
made with the repository's path and the temporary data folders written as placeholders;
everything else enters as ``doll run`` computes it. Regenerate the file, after a change
that is meant to change keys (and says so in the migration notes), with
``DOLL_REGENERATE_STAGE_KEYS=1 python -m pytest tests/test_stage_keys_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from doll_core.doctor import plan
from doll_core.experiment import stages
from doll_core.experiment.ablation import grid_documents
from doll_core.experiment.loading import load_experiment, read_experiment_file

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "stage-keys.json"
#: Files whose data lie outside the project: planned on stand-in folders (the overrides
#: their own comments give).
OVERRIDES = {
    "chexpert_paper.toml": {
        "data.classification.root": "chexpert",
        "data.tasks.organs.root": "jsrt",
        "data.tasks.infection.root": "covid-qu-ex",
    },
    "real_lungs.toml": {
        "data.classification.root": "<repo>/data/real-cxr/classification",
        "data.tasks.lungs.root": "<repo>/data/real-cxr/lungs",
    },
}

#: Settings the files leave at their defaults, each changed once (and once set to its
#: default, which must not change a key), so that every rule of how a setting enters a key
#: is held: ``name: [file, --set ...]``.
VARIANTS = {
    "targets-predicted": ["phantom_quickstart.toml", 'explanation.targets="predicted"'],
    "engine-hashed": ["phantom_quickstart.toml", "explanation.engine.max_rows=8"],
    "engine-not-hashed": ["phantom_quickstart.toml", "explanation.engine.compile=true"],
    "engine-default": ["phantom_quickstart.toml", "explanation.engine.max_rows=64"],
    "contrast": ["phantom_quickstart.toml", "data.phantom.finding_contrast=2.0"],
    "contrast-default": ["quickstart.toml", "data.phantom.finding_contrast=1.0"],
    "workers": [
        "phantom_quickstart.toml",
        "training.num_workers=1",
        "explanation.workers=1",
        "data.phantom.workers=3",
        "finetune.cache_samples=true",
    ],
    "fusion-params": ["fusion_ablation.toml", 'fusion.name="max"'],
    "evaluation": [
        "phantom_quickstart.toml",
        'evaluation.metrics=["deletion"]',
        "explanation.engine.max_rows=8",
    ],
}

#: Variants that must plan exactly their file's stages: a setting set to its default, or
#: one that never enters a key.
SAME_AS_FILE = ("engine-not-hashed", "engine-default", "contrast-default", "workers")


def planned_keys(
    path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...] = ()
) -> list[str]:
    """The stage folders (``kind-label-key``) ``doll doctor`` plans for ``path``, with the
    ``--set`` values ``extra``."""
    original = stages.stage_key

    def portable_key(kind: str, settings: Any, inputs: Any) -> str:
        def portable(value: Any) -> Any:
            text = json.dumps(value, sort_keys=True, default=str)
            text = text.replace(str(REPO), "<repo>").replace(str(scratch), "<data>")
            return json.loads(text)

        return original(kind, portable(dict(settings)), portable(dict(inputs)))

    monkeypatch.setattr(stages, "stage_key", portable_key)  # the one caller: StageCache.run
    sets = list(extra)
    for key, value in OVERRIDES.get(path.name, {}).items():
        folder = Path(value.replace("<repo>", str(REPO))) if "<repo>" in value else scratch / value
        folder.mkdir(parents=True, exist_ok=True)
        sets.append(f"{key}={json.dumps(str(folder))}")
    if "ablation" in read_experiment_file(path):  # every grid point, as doctor plans them
        experiments = [experiment for _, _, experiment, _ in grid_documents(path, overrides=sets)]
    else:
        experiments = [load_experiment(path, sets)[0]]
    names: list[str] = []
    for experiment in experiments:
        planned = plan.planned_stages(experiment, scratch / "stages", device="cpu")
        names += [stage.name for stage in planned if stage.name not in names]
    return names


def test_every_planned_stage_key_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = {
        path.name: planned_keys(path, tmp_path / path.stem, monkeypatch)
        for path in sorted((REPO / "experiments").glob("*.toml"))
    }
    for name, (file, *extra) in VARIANTS.items():
        path = REPO / "experiments" / file
        found[name] = planned_keys(path, tmp_path / name, monkeypatch, tuple(extra))
    if os.environ.get("DOLL_REGENERATE_STAGE_KEYS"):
        GOLDEN.write_text(json.dumps(found, indent=1) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert sorted(found) == sorted(recorded), "an experiment file was added or removed"
    for name, keys in recorded.items():
        assert found[name] == keys, name
    for name in SAME_AS_FILE:
        assert found[name] == found[VARIANTS[name][0]], f"{name} changed a stage key"
