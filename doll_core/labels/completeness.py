"""The completeness of a label store's maps, over every shard however many runs made them.

An explainer that measures completeness (Integrated Gradients: how far the sum of a map is
from the logit gain it explains) reports running means over the maps it made in this
process (``performance_report()["completeness"]``: ``maps``, ``mean_abs_delta``,
``mean_abs_gain``). A resumed label generation makes only the missing shards, so that
report covers only them. Each shard's own share is therefore written beside it
(``completeness-NNNNN.json``: the number of maps measured and the sums of |delta| and
|gain|), and ``generation.json`` reports the sums over the store's shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from doll_core.atomic import atomic_write_text
from doll_core.payloads import read_json

Sums = tuple[int, float, float]  # maps measured, sum |delta|, sum |gain|


def completeness_sums(report: dict[str, Any] | None) -> Sums | None:
    """``(maps, sum |delta|, sum |gain|)`` of an explainer's report so far, or ``None``
    when it measures no completeness."""
    completeness = (report or {}).get("completeness")
    if not isinstance(completeness, dict):
        return (0, 0.0, 0.0) if report and "completeness" in report else None
    maps = int(completeness.get("maps") or 0)
    return (
        maps,
        float(completeness.get("mean_abs_delta") or 0.0) * maps,
        float(completeness.get("mean_abs_gain") or 0.0) * maps,
    )


def _shard_file(store: Path, index: int) -> Path:
    return store / f"completeness-{index:05d}.json"


def write_shard_completeness(store: Path, index: int, after: Sums, before: Sums | None) -> None:
    """Record the share of shard ``index``: the report's sums ``after`` it less ``before``."""
    start = before or (0, 0.0, 0.0)
    maps, delta, gain = (a - b for a, b in zip(after, start, strict=True))
    path = _shard_file(store, index)
    record = {"maps": int(maps), "sum_abs_delta": float(delta), "sum_abs_gain": float(gain)}
    atomic_write_text(path, json.dumps(record) + "\n")


def store_completeness(store: Path, shards: Iterable[int]) -> dict[str, Any] | None:
    """The completeness over ``shards`` of ``store`` (those with a record): ``maps``,
    ``mean_abs_delta``, ``mean_abs_gain``, ``relative_delta`` and ``shards`` (how many
    had a record); ``None`` when none has."""
    maps, delta, gain, counted = 0, 0.0, 0.0, 0
    for index in shards:
        record, _ = read_json(_shard_file(store, index))
        if not isinstance(record, dict):
            continue
        try:
            maps += int(record["maps"])
            delta += float(record["sum_abs_delta"])
            gain += float(record["sum_abs_gain"])
        except (KeyError, TypeError, ValueError):
            continue
        counted += 1
    if not counted:
        return None
    return {
        "maps": maps,
        "mean_abs_delta": delta / maps if maps else None,
        "mean_abs_gain": gain / maps if maps else None,
        "relative_delta": delta / gain if gain > 0 else None,
        "shards": counted,
    }


def with_store_completeness(
    report: dict[str, Any] | None, store: Path, shards: list[int]
) -> dict[str, Any] | None:
    """An explainer's report with its ``completeness`` over every shard of ``store``
    listed in ``shards`` (made by this run or an earlier one) instead of this run's."""
    if not report or "completeness" not in report:
        return report
    whole = store_completeness(store, shards)
    return {**report, "completeness": whole if whole is not None else report["completeness"]}
