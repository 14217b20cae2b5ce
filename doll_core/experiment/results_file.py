"""A run folder's ``results.json``: written with the folders it names relative to the run
folder where they lie in the same tree (:mod:`doll_core.relocation`), read back with
them resolved, so that a moved or copied run reports from its own stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from doll_core.atomic import atomic_write_text
from doll_core.errors import DollError
from doll_core.relocation import located, portable

RESULTS = "results.json"
#: top-level keys that name a folder (besides each stage's and fine-tuning run's ``folder``)
FOLDER_KEYS = ("labels_folder", "phantom", "evaluation_folder")


def write_results(run: Path, results: dict[str, Any]) -> None:
    """Write ``run/results.json`` from ``results`` (whose paths are absolute)."""
    text = json.dumps(portable(json.loads(json.dumps(results, default=str)), run), indent=2)
    atomic_write_text(run / RESULTS, text + "\n")


def with_located_folders(results: dict[str, Any], run: Path) -> dict[str, Any]:
    """``results`` as read from ``run/results.json``, every folder it names resolved from
    ``run`` (relative records and absolute, older ones alike)."""
    resolved = dict(results)
    if isinstance(results.get("finetune"), dict):
        resolved["finetune"] = dict(results["finetune"])
    for key in FOLDER_KEYS:
        if resolved.get(key):
            resolved[key] = str(located(resolved[key], run))
    for key, parent in (("stages", resolved), ("runs", resolved.get("finetune"))):
        if isinstance(parent, dict) and isinstance(parent.get(key), list):
            parent[key] = [
                {**entry, "folder": str(located(entry["folder"], run))}
                if isinstance(entry, dict) and entry.get("folder")
                else entry
                for entry in parent[key]
            ]
    return resolved


def read_results(run: Path) -> dict[str, Any]:
    """``run/results.json`` with its folders resolved (:func:`with_located_folders`).

    :raises DollError: when the run has not finished (no ``results.json``) or the file is
        unreadable.
    """
    path = run / RESULTS
    if not path.is_file():
        raise DollError(f"{run} is not a finished run folder (no {RESULTS})")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DollError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(results, dict):
        raise DollError(f"{path}: not a DoLL results file (not a JSON object)")
    return with_located_folders(results, run)
