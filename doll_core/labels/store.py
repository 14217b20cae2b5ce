"""The label store: shards of N images plus a manifest.

Layout of a store folder::

    config.json           the generation config (JSON)
    manifest.json         shards (file, sha256, images), and per image: shard, observations,
                          per-map statistics; rebuilt from the shards if missing
    shard-00000.pt ...    one file per shard (torch.save, loaded with weights_only=True)

A shard holds, for its images in order: ``ids``; ``targets`` long ``[n, T]`` (observation
indices, -1 padded); the maps of the explained observations only, quantised to uint8,
concatenated ``[n_maps, R, R]`` with ``offsets [n + 1]``; ``stats`` float ``[n_maps, 3]``
(mean, max, share of pixels >= 0.5); skipped images with reasons; counts of maps that had
NaN/Inf or no signal. Shards are written to a temporary name and renamed when complete;
the manifest records each shard's SHA-256, so a corrupted shard is detected, never read.

:func:`check_store` is the one check of a store's validity: ``config.json``,
``manifest.json`` and the shard files against each other. Generation resumes from the
shards it verifies, :class:`LabelStore` opens a store with its readers of the config and
the manifest, and ``doll doctor`` reports its issues with a severity each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from doll_core.atomic import LEFTOVER, TEMPORARY_NAME, atomic_torch_save, atomic_write_text
from doll_core.checkpoint import read_classifier_meta
from doll_core.data.imageio import ImageReadError
from doll_core.data.paths import contained_path
from doll_core.digests import sha256_of
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.payloads import load_failure, read_json, safe_torch_load
from doll_core.relocation import located

SHARD_FORMAT = "doll-label-shard"
SHARD_VERSION = 1
STORE_FORMAT = "doll-label-store"
MANIFEST = "manifest.json"
CONFIG = "config.json"
#: ``config.json``'s list of each classifier's validation AUROC per observation
#: (``{observation: AUROC}``), in the order of the generation config's ``classifiers``
CLASSIFIER_AUROC = "classifier_val_auroc"
_SHARD_NAME = re.compile(r"^shard-(\d{5})\.pt$")


def shard_path(store: Path, index: int) -> Path:
    return store / f"shard-{index:05d}.pt"


@dataclass
class ShardContent:
    """The labels of one shard (see the module docstring)."""

    index: int
    config_hash: str
    ids: list[str]
    targets: torch.Tensor
    maps: torch.Tensor
    offsets: torch.Tensor
    stats: torch.Tensor
    skipped: list[dict[str, str]]
    nonfinite: int = 0
    no_signal: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": SHARD_FORMAT,
            "format_version": SHARD_VERSION,
            "shard": self.index,
            "config_hash": self.config_hash,
            "ids": list(self.ids),
            "targets": self.targets.to(torch.long).contiguous(),
            "maps": self.maps.to(torch.uint8).contiguous(),
            "offsets": self.offsets.to(torch.long).contiguous(),
            "stats": self.stats.to(torch.float32).contiguous(),
            "skipped": [dict(s) for s in self.skipped],
            "nonfinite": int(self.nonfinite),
            "no_signal": int(self.no_signal),
        }

    def image_maps(self, position: int) -> tuple[list[int], torch.Tensor]:
        """Observation indices and uint8 maps ``[k, R, R]`` of the image at ``position``."""
        indices = [int(t) for t in self.targets[position] if t >= 0]
        start, stop = int(self.offsets[position]), int(self.offsets[position + 1])
        return indices, self.maps[start:stop]


def map_statistics(maps: torch.Tensor) -> torch.Tensor:
    """``[n, R, R]`` uint8 maps -> ``[n, 3]``: mean, max, share of pixels >= 0.5."""
    values = maps.float() / 255
    return torch.stack(
        [values.mean(dim=(1, 2)), values.amax(dim=(1, 2)), (values >= 0.5).float().mean((1, 2))],
        dim=1,
    ).reshape(-1, 3)


def write_shard(store: Path, content: ShardContent) -> None:
    atomic_torch_save(content.to_payload(), shard_path(store, content.index))


def read_shard(
    path: Path, *, expected_sha256: str | None = None, config_hash: str | None = None
) -> ShardContent:
    """Load a shard, checking its checksum (when known), format and config."""
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise DollError(f"{path}: checksum does not match the manifest (corrupted shard)")
    payload = safe_torch_load(path, "label shard", convertible=False)
    if not isinstance(payload, dict) or payload.get("format") != SHARD_FORMAT:
        raise DollError(f"{path} is not a DoLL label shard")
    if payload.get("format_version") != SHARD_VERSION:
        raise DollError(f"{path}: shard format version {payload.get('format_version')!r}")
    if config_hash is not None and payload.get("config_hash") != config_hash:
        raise DollError(f"{path} was generated with another config")
    return ShardContent(
        index=int(payload["shard"]),
        config_hash=str(payload["config_hash"]),
        ids=list(payload["ids"]),
        targets=payload["targets"],
        maps=payload["maps"],
        offsets=payload["offsets"],
        stats=payload["stats"],
        skipped=list(payload["skipped"]),
        nonfinite=int(payload["nonfinite"]),
        no_signal=int(payload["no_signal"]),
    )


def shard_indices(store: Path) -> list[int]:
    """Indices of the shard files present in ``store``."""
    return sorted(int(m.group(1)) for p in store.iterdir() if (m := _SHARD_NAME.match(p.name)))


def build_manifest(store: Path, config_hash: str, total_shards: int) -> dict[str, Any]:
    """The manifest of ``store``, built from its shard files (each is read and checked).
    Files numbered ``total_shards`` or beyond belong to no shard of this store and are left
    out (``doll doctor`` reports them as orphans)."""
    shards: dict[str, Any] = {}
    images: dict[str, Any] = {}
    for index in shard_indices(store):
        if index >= total_shards:
            continue
        path = shard_path(store, index)
        content = read_shard(path, config_hash=config_hash)
        shards[str(index)] = {
            "file": path.name,
            "sha256": sha256_of(path),
            "images": len(content.ids),
            "bytes": path.stat().st_size,
            "skipped": len(content.skipped),
        }
        for position, image_id in enumerate(content.ids):
            indices, _ = content.image_maps(position)
            start = int(content.offsets[position])
            images[image_id] = {
                "shard": index,
                "observations": [OBSERVATIONS[i] for i in indices],
                "stats": [
                    [round(float(v), 4) for v in content.stats[start + k]]
                    for k in range(len(indices))
                ],
            }
    return {
        "format": STORE_FORMAT,
        "config_hash": config_hash,
        "total_shards": total_shards,
        "complete": len(shards) == total_shards,
        "shards": shards,
        "images": images,
    }


def write_manifest(store: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(store / MANIFEST, json.dumps(manifest) + "\n")


# -- the validity check ------------------------------------------------------------------------

#: What a :class:`StoreIssue` is about: ``config`` and ``manifest`` (the store cannot be
#: trusted), ``shard`` (one shard is damaged and is made again), ``missing manifest`` (of a
#: store that should be complete; readers rebuild it), ``leftover`` (a temporary file of an
#: interrupted write), ``no checksum`` (an old manifest), ``orphan`` (a shard file no
#: manifest entry covers) and ``count`` (images labelled and skipped against the config's).
IssueKind = Literal[
    "config", "manifest", "shard", "missing manifest", "leftover", "no checksum", "orphan", "count"
]


@dataclass(frozen=True)
class StoreIssue:
    """One thing wrong with a label store: what it is about, the file, what is wrong."""

    kind: IssueKind
    path: Path
    message: str


@dataclass
class StoreHealth:
    """What :func:`check_store` found about one store."""

    store: Path
    issues: list[StoreIssue] = field(default_factory=list)
    #: ``config.json``; ``None`` when it is unreadable (nothing else is checked then).
    config: dict[str, Any] | None = None
    #: ``manifest.json``; ``None`` when it is missing or unreadable.
    manifest: dict[str, Any] | None = None
    #: Whether the store should be complete (given, or as its manifest says).
    finished: bool = False
    #: Shards ``0 .. total - 1`` that were verified (a resume keeps them).
    valid: set[int] = field(default_factory=set)
    #: Shard -> why it does not verify (a resume makes it again).
    bad: dict[int, str] = field(default_factory=dict)
    #: Images labelled and skipped in the shards the manifest lists and that verified.
    labelled: int = 0
    skipped: int = 0

    @property
    def total(self) -> int | None:
        return int(self.config["total_shards"]) if self.config is not None else None

    @property
    def fused(self) -> bool:
        """Made by fusing other stores (rewritten whole, never resumed shard by shard)."""
        return self.config is not None and "fused_from" in self.config

    @property
    def listed(self) -> dict[str, Any]:
        """The manifest's shard entries (none without a manifest)."""
        return self.manifest["shards"] if self.manifest is not None else {}

    def add(self, kind: IssueKind, path: Path, message: str) -> None:
        self.issues.append(StoreIssue(kind, path, message))

    def damaged(self, index: int, path: Path, message: str, why: str) -> None:
        """Shard ``index`` (at ``path``) is damaged: the issue, and why a resume makes it
        again."""
        self.add("shard", path, message)
        self.bad[index] = why

    def to_make(self) -> list[tuple[int, str]]:
        """``(shard, why)`` for every shard a resume would (re)make: all of a fused store,
        else those that did not verify."""
        return [
            (k, self.bad.get(k, "not made yet"))
            for k in range(self.total or 0)
            if self.fused or k not in self.valid
        ]


def check_store(store: Path, *, finished: bool | None = None) -> StoreHealth:
    """Check ``store``'s config against its manifest and the manifest against the files.

    :param finished: whether the store should be complete (a finished stage); ``None``: as
        its manifest says. In an unfinished store a shard file the manifest does not list
        is verified and kept (a resume adopts it); in a finished one it is an orphan.
    """
    check = StoreHealth(store)
    check.config, check.issues = read_store_config(store)
    if check.config is None:
        return check
    check.manifest, issues = read_store_manifest(store, finished=finished)
    check.issues += issues
    if check.manifest is not None:
        check.issues += manifest_disagreements(store, check.manifest, check.config)
    if finished is None:
        finished = bool(check.manifest and check.manifest.get("complete"))
    check.finished = finished
    on_disk = shard_indices(store)
    for path in sorted(store.iterdir()):
        if TEMPORARY_NAME.match(path.name):
            check.add("leftover", path, LEFTOVER)
    _check_listed_shards(check)
    _check_unlisted_shards(check, on_disk)
    _check_completeness(check)
    return check


def read_store_config(store: Path) -> tuple[dict[str, Any] | None, list[StoreIssue]]:
    """``config.json`` with its ``config_hash`` and ``total_shards``, or ``None`` and why."""
    path = store / CONFIG
    config, why = read_json(path)
    if config is None or not isinstance(config, dict):
        return None, [StoreIssue("config", path, f"label store config {why or 'is not an object'}")]
    if not isinstance(config.get("config_hash"), str) or not isinstance(
        config.get("total_shards"), int
    ):
        return None, [StoreIssue("config", path, "has no config_hash or total_shards")]
    return config, []


def read_store_manifest(
    store: Path, *, finished: bool | None = None
) -> tuple[dict[str, Any] | None, list[StoreIssue]]:
    """``manifest.json`` with its ``shards``, or ``None`` when it is missing (an issue only
    of a ``finished`` store) or unreadable."""
    path = store / MANIFEST
    manifest, why = read_json(path)
    if manifest is None and why == "missing":
        message = "missing; readers rebuild it from the shards (each is loaded once)"
        return None, [StoreIssue("missing manifest", path, message)] if finished else []
    problem = why or _manifest_shape_problem(manifest)
    if problem is not None:
        return None, [StoreIssue("manifest", path, problem)]
    return manifest, []


def _manifest_shape_problem(manifest: Any) -> str | None:
    """Why ``manifest`` does not have the shape :func:`build_manifest` writes, or ``None``:
    ``config_hash`` a string, ``shards`` ``{"N": {"file": str, "sha256": str, ...}}``
    (``sha256`` absent in manifests of DoLL before 0.1),
    ``images`` ``{id: {"shard": int, ...}}``."""
    not_one = "is not a DoLL label-store manifest"
    if not isinstance(manifest, dict):
        return f"{not_one} (not a JSON object)"
    shards, images = manifest.get("shards"), manifest.get("images")
    if not isinstance(manifest.get("config_hash"), str):
        return f"{not_one} (no config_hash)"
    if not isinstance(shards, dict) or not isinstance(images, dict):
        return f"{not_one} (shards and images must be objects)"
    for key, entry in shards.items():
        if not (
            key.isdecimal()
            and isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("sha256"), str | None)  # None: a manifest before 0.1
        ):
            return f"{not_one} (shard entry {key!r} is not {{file, sha256, ...}})"
    for image_id, entry in images.items():
        if not (
            isinstance(entry, dict)
            and type(entry.get("shard")) is int
            and str(entry["shard"]) in shards
        ):
            return f"{not_one} (image {image_id!r} names no listed shard)"
    return None


def manifest_disagreements(
    store: Path, manifest: dict[str, Any], config: dict[str, Any]
) -> list[StoreIssue]:
    """Where ``manifest`` (of ``store``) does not agree with ``config``: its format, config
    hash and number of shards."""
    path = store / MANIFEST
    issues = []
    if manifest.get("format") != STORE_FORMAT:
        issues.append(StoreIssue("manifest", path, f"format is {manifest.get('format')!r}"))
    if manifest.get("config_hash") != config["config_hash"]:
        issues.append(StoreIssue("manifest", path, "config_hash differs from config.json's"))
    total = config["total_shards"]
    if manifest.get("total_shards") != total:
        message = f"total_shards is {manifest.get('total_shards')!r}, config.json says {total}"
        issues.append(StoreIssue("manifest", path, message))
    return issues


def _images_by_shard(manifest: dict[str, Any] | None) -> dict[int, set[str]]:
    """Shard -> the image ids the manifest assigns to it."""
    images = manifest.get("images", {}) if manifest is not None else {}
    per_shard: dict[int, set[str]] = {}
    if isinstance(images, dict):
        for image_id, entry in images.items():
            if isinstance(entry, dict) and isinstance(entry.get("shard"), int):
                per_shard.setdefault(entry["shard"], set()).add(image_id)
    return per_shard


def _check_listed_shards(check: StoreHealth) -> None:
    """Verify every shard the manifest lists: its file, size, SHA-256, payload and contents."""
    manifest_path = check.store / MANIFEST
    assigned = _images_by_shard(check.manifest)
    unchecked: list[str] = []
    for key in sorted(check.listed, key=lambda k: int(k) if k.isdigit() else -1):
        entry = check.listed[key]
        if not key.isdigit() or not isinstance(entry, dict):
            check.add("manifest", manifest_path, f"shard entry {key!r} is malformed")
            continue
        index = int(key)
        try:
            path = contained_path(check.store, str(entry.get("file", "")))
        except DollError as exc:
            check.add("manifest", manifest_path, f"shard {index}: {exc}")
            check.bad[index] = "bad file name in the manifest"
            continue
        content = _verify_listed_shard(
            check, index, path, entry, assigned.get(index, set()), unchecked
        )
        if content is not None:
            check.labelled += len(content.ids)
            check.skipped += len(content.skipped)
            check.valid.add(index)
    if unchecked:
        check.add(
            "no checksum",
            manifest_path,
            f"no checksum recorded for {len(unchecked)} shard(s) ({', '.join(unchecked)}): "
            "an old manifest; their contents were checked by loading them",
        )


def _verify_listed_shard(
    check: StoreHealth,
    index: int,
    path: Path,
    entry: dict[str, Any],
    assigned: set[str],
    unchecked: list[str],
) -> ShardContent | None:
    """The contents of the listed shard ``index`` at ``path`` if it matches its manifest
    ``entry`` (and holds the ``assigned`` image ids); else ``None``, with the issue added.
    A file whose entry records no SHA-256 is added to ``unchecked`` and verified by loading."""
    damage = _file_damage(path, entry, unchecked)
    if damage is not None:
        check.damaged(index, path, *damage)
        return None
    content = _load_shard(check, index, path)
    if content is None:
        return None
    problems = shard_problems(content, index, entry.get("images"), assigned)
    if problems:
        check.damaged(index, path, "; ".join(problems), "contents differ from the manifest")
        return None
    return content


def _file_damage(path: Path, entry: dict[str, Any], unchecked: list[str]) -> tuple[str, str] | None:
    """``(what is wrong, why it is made again)`` when the file ``path`` is missing or its
    size or SHA-256 is not the manifest ``entry``'s; ``None`` when it matches (or when the
    entry records no SHA-256: the file's name is then added to ``unchecked``)."""
    if not path.is_file():
        return "missing shard (listed in manifest.json)", "missing"
    size = path.stat().st_size
    if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
        message = f"size is {size} bytes, manifest.json says {entry['bytes']}"
        return message, "size differs from the manifest"
    expected = entry.get("sha256")
    if not isinstance(expected, str):
        unchecked.append(path.name)
    elif sha256_of(path) != expected:
        return "SHA-256 does not match manifest.json (corrupted shard)", "checksum mismatch"
    return None


def shard_problems(
    content: ShardContent, index: int, images: object, assigned: set[str]
) -> list[str]:
    """How shard ``content`` differs from what the manifest says of shard ``index``: its
    number of ``images`` and the ``assigned`` image ids; and whether its tensors agree
    (``targets [n, T]``, ``offsets [n + 1]``, ``maps [n_maps, R, R]``, ``stats [n_maps, 3]``)."""
    n = len(content.ids)
    problems = []
    if content.index != index:
        problems.append(f"holds shard {content.index}, listed as {index}")
    if images != n:
        problems.append(f"{n} images, manifest.json says {images}")
    if assigned != set(content.ids):
        problems.append(
            f"its image ids differ from the {len(assigned)} manifest.json assigns to it"
        )
    if (
        content.targets.shape[0] != n
        or content.offsets.numel() != n + 1
        or int(content.offsets[-1]) != content.maps.shape[0]
        or content.stats.shape[0] != content.maps.shape[0]
    ):
        problems.append("targets, offsets, maps and stats do not agree")
    return problems


def _check_unlisted_shards(check: StoreHealth, on_disk: list[int]) -> None:
    """Shard files the manifest does not list: orphans in a finished store and beyond the
    store's shards (never adopted); in an unfinished store, kept when they load."""
    total = check.total or 0
    for index in on_disk:
        if str(index) in check.listed:
            continue
        path = shard_path(check.store, index)
        if check.finished or index >= total:
            check.add(
                "orphan",
                path,
                "orphan shard: not listed in manifest.json (readers ignore it, a resumed "
                "generation would adopt it): delete it unless it belongs here",
            )
        elif _load_shard(check, index, path) is not None:
            check.valid.add(index)


def _load_shard(check: StoreHealth, index: int, path: Path) -> ShardContent | None:
    """Shard ``index`` read from ``path`` against the store's config hash, or ``None``
    (with the issue added) when it does not load or belongs to another config."""
    assert check.config is not None
    try:
        return read_shard(path, config_hash=check.config["config_hash"])
    except DollError as exc:
        check.damaged(index, path, load_failure(exc, path), "does not load")
        return None


def _check_completeness(check: StoreHealth) -> None:
    """The manifest's ``complete`` against its shards and the config's image count."""
    manifest, total = check.manifest, check.total
    if manifest is None or check.config is None:
        return
    path = check.store / MANIFEST
    listed = len(check.listed)
    if manifest.get("complete") and listed != total:
        check.add("manifest", path, f"says complete but lists {listed} of {total} shards")
    elif check.finished and not manifest.get("complete"):
        check.add("manifest", path, f"incomplete: {listed} of {total} shards")
    images = check.config.get("images")
    counted = check.labelled + check.skipped
    if manifest.get("complete") and not check.bad and isinstance(images, int) and counted != images:
        check.add(
            "count",
            path,
            f"{check.labelled} labelled + {check.skipped} skipped images, "
            f"config.json says {images}",
        )


def open_store_files(store: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``config.json`` and ``manifest.json`` (``None`` when missing) of a store a reader
    opens, read by :func:`check_store`'s readers; the shards are checked when they are read
    (their SHA-256 and config hash against the manifest's).

    :raises DollError: when ``store`` has no config, or its config or manifest is
        unreadable.
    """
    if not (store / CONFIG).is_file():
        raise DollError(f"{store} is not a DoLL label store (no {CONFIG})")
    config, issues = read_store_config(store)
    if config is None:
        raise DollError(f"{issues[0].path}: {issues[0].message}")
    manifest, issues = read_store_manifest(store)
    if issues:
        raise DollError(f"{issues[0].path}: {issues[0].message}")
    return config, manifest


class LabelStore:
    """Read access to a store: its config and manifest checked on opening
    (:func:`open_store_files`; a missing manifest is rebuilt from the shards), each shard
    checked against its manifest entry when read, and per-image maps."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config: dict[str, Any]
        self.config, manifest = open_store_files(self.path)
        if manifest is None:  # rebuild it from the shards
            manifest = build_manifest(
                self.path, self.config["config_hash"], int(self.config["total_shards"])
            )
            write_manifest(self.path, manifest)
        self.manifest: dict[str, Any] = manifest
        self._cache: tuple[int, ShardContent] | None = None

    @property
    def ids(self) -> list[str]:
        return list(self.manifest["images"])

    def shard(self, index: int) -> ShardContent:
        if self._cache is not None and self._cache[0] == index:
            return self._cache[1]
        entry = self.manifest["shards"][str(index)]
        try:
            shard_file = contained_path(self.path, entry["file"])
        except ImageReadError as exc:
            raise DollError(
                f"{self.path}: manifest names shard {exc.path!r}: {exc.reason}"
            ) from None
        content = read_shard(
            shard_file,
            expected_sha256=entry.get("sha256"),
            config_hash=self.manifest["config_hash"],
        )
        self._cache = (index, content)
        return content

    def labels(self, image_id: str) -> tuple[list[int], torch.Tensor]:
        """Observation indices and uint8 maps ``[k, R, R]`` of one image."""
        try:
            index = int(self.manifest["images"][image_id]["shard"])
        except KeyError:
            raise DollError(f"image {image_id!r} is not in the label store {self.path}") from None
        content = self.shard(index)
        return content.image_maps(content.ids.index(image_id))

    @property
    def data_root(self) -> Path:
        """The dataset root the store was made from (recorded relative to the store inside
        a run folder, see :mod:`doll_core.relocation`)."""
        return located(self.config["config"]["data"], self.path)

    @property
    def classifier_paths(self) -> list[Path]:
        """The checkpoints the store was made with, in their recorded order."""
        return [located(p, self.path) for p in self.config["config"]["classifiers"]]

    def generation_settings(self) -> dict[str, Any]:
        """The generation config the store was made with, its paths resolved: what
        :class:`~doll_core.labels.config.LabelGenerationConfig` takes to make it again."""
        return {
            **self.config["config"],
            "data": str(self.data_root),
            "classifiers": [str(path) for path in self.classifier_paths],
        }

    def classifier_auroc(self) -> list[dict[str, float | None]]:
        """Each classifier's validation AUROC per observation: as recorded in the store,
        or, for a store made before DoLL recorded it, read from the checkpoints.

        :raises DollError: when an older store's checkpoint is gone or unreadable.
        """
        recorded = self.config.get(CLASSIFIER_AUROC)
        if isinstance(recorded, list) and len(recorded) == len(self.classifier_paths):
            return [dict(values) for values in recorded]
        return [dict(read_classifier_meta(path).val_auroc) for path in self.classifier_paths]

    def skipped(self) -> Iterator[dict[str, str]]:
        for index in sorted(int(k) for k in self.manifest["shards"]):
            yield from self.shard(index).skipped
