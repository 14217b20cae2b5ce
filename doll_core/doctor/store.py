"""Checking a label store: ``config.json``, ``manifest.json`` and the shard files on disk
against each other, and which shards a resumed generation would make again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doll_core.data.paths import contained_path
from doll_core.digests import sha256_of
from doll_core.doctor.files import LEFTOVER, TEMPORARY, load_failure, read_json
from doll_core.doctor.findings import Finding, Severity
from doll_core.errors import DollError
from doll_core.labels.store import (
    CONFIG,
    MANIFEST,
    read_shard,
    shard_indices,
    shard_path,
)


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
    findings: list[Finding] = []

    def add(severity: Severity, path: Path, message: str) -> None:
        findings.append(Finding(severity, name(path), message, stage))

    config_path = store / CONFIG
    config, why = read_json(config_path)
    if config is None or not isinstance(config, dict):
        add("problem", config_path, f"label store config {why or 'is not an object'}")
        return StoreCheck(findings, None, [], False, False)
    config_hash = config.get("config_hash")
    total = config.get("total_shards")
    if not isinstance(config_hash, str) or not isinstance(total, int):
        add("problem", config_path, "has no config_hash or total_shards")
        return StoreCheck(findings, None, [], False, False)
    fused = "fused_from" in config

    manifest: dict[str, Any] | None = None
    manifest_path = store / MANIFEST
    raw, why = read_json(manifest_path)
    if raw is None and why == "missing":
        if finished:
            add(
                "warning",
                manifest_path,
                "missing; readers rebuild it from the shards (each is loaded once)",
            )
    elif not isinstance(raw, dict) or not isinstance(raw.get("shards"), dict):
        add("problem", manifest_path, why or "is not a DoLL label-store manifest")
    else:
        manifest = raw
        if manifest.get("format") != "doll-label-store":
            add("problem", manifest_path, f"format is {manifest.get('format')!r}")
        if manifest.get("config_hash") != config_hash:
            add("problem", manifest_path, "config_hash differs from config.json's")
        if manifest.get("total_shards") != total:
            add(
                "problem",
                manifest_path,
                f"total_shards is {manifest.get('total_shards')!r}, config.json says {total}",
            )
    if finished is None:
        finished = bool(manifest and manifest.get("complete"))
    damaged: Severity = "problem" if finished else "warning"

    on_disk = {index: shard_path(store, index) for index in shard_indices(store)}
    for path in sorted(store.iterdir()):
        if TEMPORARY.match(path.name):
            add("warning", path, LEFTOVER)

    valid: set[int] = set()
    bad: dict[int, str] = {}
    listed: dict[str, Any] = manifest["shards"] if manifest is not None else {}
    images = manifest.get("images", {}) if manifest is not None else {}
    per_shard: dict[int, set[str]] = {}
    if isinstance(images, dict):
        for image_id, entry in images.items():
            if isinstance(entry, dict) and isinstance(entry.get("shard"), int):
                per_shard.setdefault(entry["shard"], set()).add(image_id)
    no_checksum = []
    counted = skipped = 0
    for key in sorted(listed, key=lambda k: int(k) if k.isdigit() else -1):
        entry = listed[key]
        if not key.isdigit() or not isinstance(entry, dict):
            add("problem", manifest_path, f"shard entry {key!r} is malformed")
            continue
        index = int(key)
        try:
            path = contained_path(store, str(entry.get("file", "")))
        except DollError as exc:
            add("problem", manifest_path, f"shard {index}: {exc}")
            bad[index] = "bad file name in the manifest"
            continue
        if not path.is_file():
            add(damaged, path, "missing shard (listed in manifest.json)")
            bad[index] = "missing"
            continue
        size = path.stat().st_size
        if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
            add(damaged, path, f"size is {size} bytes, manifest.json says {entry['bytes']}")
            bad[index] = "size differs from the manifest"
            continue
        expected = entry.get("sha256")
        if not isinstance(expected, str):
            no_checksum.append(path.name)
        elif sha256_of(path) != expected:
            add(damaged, path, "SHA-256 does not match manifest.json (corrupted shard)")
            bad[index] = "checksum mismatch"
            continue
        try:
            content = read_shard(path, config_hash=config_hash)
        except DollError as exc:
            add(damaged, path, load_failure(exc, path))
            bad[index] = "does not load"
            continue
        n = len(content.ids)
        problems = []
        if content.index != index:
            problems.append(f"holds shard {content.index}, listed as {index}")
        if entry.get("images") != n:
            problems.append(f"{n} images, manifest.json says {entry.get('images')}")
        if manifest is not None and per_shard.get(index, set()) != set(content.ids):
            problems.append(
                f"its image ids differ from the {len(per_shard.get(index, set()))} "
                "manifest.json assigns to it"
            )
        if (
            content.targets.shape[0] != n
            or content.offsets.numel() != n + 1
            or int(content.offsets[-1]) != content.maps.shape[0]
            or content.stats.shape[0] != content.maps.shape[0]
        ):
            problems.append("targets, offsets, maps and stats do not agree")
        if problems:
            add(damaged, path, "; ".join(problems))
            bad[index] = "contents differ from the manifest"
            continue
        counted += n
        skipped += len(content.skipped)
        valid.add(index)
    if no_checksum:
        add(
            "warning",
            manifest_path,
            f"no checksum recorded for {len(no_checksum)} shard(s) ({', '.join(no_checksum)}): "
            "an old manifest; their contents were checked by loading them",
        )

    for index, path in on_disk.items():
        if str(index) in listed:
            continue
        if finished or index >= total:
            add(
                "warning",
                path,
                "orphan shard: not listed in manifest.json (readers ignore it, a resumed "
                "generation would adopt it): delete it unless it belongs here",
            )
            continue
        try:  # an unfinished store: a resume keeps the unlisted shards that load
            read_shard(path, config_hash=config_hash)
        except DollError as exc:
            add(damaged, path, load_failure(exc, path))
            bad[index] = "does not load"
            continue
        valid.add(index)

    if manifest is not None:
        if manifest.get("complete") and len(listed) != total:
            add(
                "problem",
                manifest_path,
                f"says complete but lists {len(listed)} of {total} shards",
            )
        elif finished and not manifest.get("complete"):
            add("problem", manifest_path, f"incomplete: {len(listed)} of {total} shards")
        images_total = config.get("images")
        if (
            manifest.get("complete")
            and not bad
            and isinstance(images_total, int)
            and counted + skipped != images_total
        ):
            add(
                "warning",
                manifest_path,
                f"{counted} labelled + {skipped} skipped images, config.json says {images_total}",
            )
    regenerate = [
        (shard_path(store, k).name, bad.get(k, "not made yet"))
        for k in range(total)
        if fused or k not in valid
    ]
    if not findings or all(f.severity == "ok" for f in findings):
        add(
            "ok",
            store,
            f"label store: {len(valid)} of {total} shards verified"
            + (f", {counted} images" if manifest is not None else ""),
        )
    return StoreCheck(findings, total, regenerate, fused, True)
