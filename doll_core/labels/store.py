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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from doll_core.atomic import atomic_torch_save, atomic_write_text
from doll_core.data.imageio import ImageReadError
from doll_core.data.paths import contained_path
from doll_core.digests import sha256_of
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.payloads import safe_torch_load

SHARD_FORMAT = "doll-label-shard"
SHARD_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
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
    payload = safe_torch_load(path, "label shard")
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
        "format": "doll-label-store",
        "config_hash": config_hash,
        "total_shards": total_shards,
        "complete": len(shards) == total_shards,
        "shards": shards,
        "images": images,
    }


def write_manifest(store: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(store / MANIFEST, json.dumps(manifest) + "\n")


class LabelStore:
    """Read access to a finished store: manifest checks and per-image maps."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / CONFIG).is_file():
            raise DollError(f"{self.path} is not a DoLL label store (no {CONFIG})")
        self.config: dict[str, Any] = json.loads((self.path / CONFIG).read_text())
        manifest_path = self.path / MANIFEST
        if manifest_path.is_file():
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        else:  # rebuild it from the shards
            self.manifest = build_manifest(
                self.path, self.config["config_hash"], int(self.config["total_shards"])
            )
            write_manifest(self.path, self.manifest)
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
            expected_sha256=entry["sha256"],
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

    def skipped(self) -> Iterator[dict[str, str]]:
        for index in sorted(int(k) for k in self.manifest["shards"]):
            yield from self.shard(index).skipped
