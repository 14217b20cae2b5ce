"""Checking a label store for ``doll doctor``: the issues of the one store check
(:func:`doll_core.labels.store.check_store`) as findings with a severity each, and which
shards a resumed generation would make again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from doll_core.doctor.findings import Finding, Severity
from doll_core.labels.store import (
    CONFIG,
    MANIFEST,
    IssueKind,
    check_store,
    shard_indices,
    shard_path,
)

#: The severity of each kind of store issue; ``shard`` damage is a problem in a store that
#: should be complete and a warning in one a resume completes (it makes the shard again).
SEVERITY: dict[IssueKind, Severity] = {
    "config": "problem",
    "manifest": "problem",
    "missing manifest": "warning",
    "leftover": "warning",
    "no checksum": "warning",
    "orphan": "warning",
    "count": "warning",
}


@dataclass
class StoreCheck:
    """The findings about one label store, and what a resume would regenerate."""

    findings: list[Finding]
    total: int | None
    #: ``(shard file, why)`` for every shard a resume would (re)make.
    regenerate: list[tuple[str, str]]
    fused: bool
    readable: bool


def is_label_store(path: Path) -> bool:
    """A folder with the store's ``config.json`` and a manifest or shard files."""
    if not (path / CONFIG).is_file():
        return False
    return (path / MANIFEST).is_file() or bool(shard_indices(path))


def check_label_store(
    store: Path,
    *,
    name: Callable[[Path], str] = str,
    finished: bool | None = None,
    stage: str | None = None,
) -> StoreCheck:
    """Check ``store`` against its manifest and its manifest against the files.

    :param name: how a finding names a path (relative to what the user gave).
    :param finished: whether the store should be complete (a finished stage); ``None``:
        as its manifest says (a bare store).
    """
    check = check_store(store, finished=finished)
    damaged: Severity = "problem" if check.finished else "warning"
    findings = [
        Finding(
            damaged if issue.kind == "shard" else SEVERITY[issue.kind],
            name(issue.path),
            issue.message,
            stage,
        )
        for issue in check.issues
    ]
    if check.total is None:  # config.json unreadable
        return StoreCheck(findings, None, [], False, False)
    if not findings:
        images = f", {check.labelled} images" if check.manifest is not None else ""
        message = f"label store: {len(check.valid)} of {check.total} shards verified{images}"
        findings.append(Finding("ok", name(store), message, stage))
    regenerate = [(shard_path(store, k).name, why) for k, why in check.to_make()]
    return StoreCheck(findings, check.total, regenerate, check.fused, True)
