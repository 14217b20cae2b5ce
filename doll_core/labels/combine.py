"""Fuse finished single-classifier label stores into one store.

This lets an experiment explain each classifier once and try several fusions on the same
maps (``doll ablate --vary fusion.name=...``). The inputs must be stores of one
classifier each, made with the same settings (data, explainer, targets, post-processing,
label size, shards), so that image ids and targets agree map for map; targets chosen by
the ensemble's predictions (``targets = "predicted"``) cannot be split this way.

Each map is fused from the stored uint8 maps, so the result can differ from fusing inside
:func:`~doll_core.labels.generate.generate_labels` by one quantisation step (1/255).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from doll_core.atomic import atomic_write_text
from doll_core.errors import DollError
from doll_core.labels.fusion import fuse_maps, validation_auroc
from doll_core.labels.store import (
    CLASSIFIER_AUROC,
    CONFIG,
    LabelStore,
    ShardContent,
    build_manifest,
    map_statistics,
    write_manifest,
    write_shard,
)
from doll_core.links import refuse_links_leaving
from doll_core.registry import Registry, get_registry
from doll_core.relocation import recorded_path

#: Config keys that may differ between the stores being fused.
_MAY_DIFFER = {"classifiers", "device", "batch_size", "fusion", "fusion_params"}


def _check_compatible(stores: Sequence[LabelStore]) -> dict[str, Any]:
    first = stores[0].config["config"]
    for store in stores:
        config = store.config["config"]
        if len(config["classifiers"]) != 1:
            raise DollError(
                f"{store.path} fuses several classifiers; give single-classifier stores"
            )
        if config.get("targets") == "predicted":
            raise DollError(
                f"{store.path} chose targets from predictions; such stores cannot be fused "
                "afterwards (generate them together instead)"
            )
        differing = sorted(
            k
            for k in set(first) | set(config)
            if k not in _MAY_DIFFER and first.get(k) != config.get(k)
        )
        if "data" in differing and store.data_root == stores[0].data_root:
            differing.remove("data")  # the same folder, recorded from another place
        if differing:
            raise DollError(
                f"{store.path} was made with other settings than {stores[0].path}: "
                f"{', '.join(differing)}"
            )
        if not store.manifest.get("complete", False):
            raise DollError(f"{store.path} is not complete")
    return first


def _fused_config(
    opened: Sequence[LabelStore],
    base: dict[str, Any],
    fusion: str,
    params: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """The fused store ``out``'s ``config.json``: the sources' shape of store, a hash of
    the sources' hashes and the fusion, the generation config with the fusion and all the
    classifiers, each classifier's validation AUROC, and where it was fused from (paths
    as :func:`~doll_core.relocation.recorded_path` names them from ``out``)."""
    classifiers = [recorded_path(store.classifier_paths[0], out) for store in opened]
    data = recorded_path(opened[0].data_root, out)
    source_hashes = [store.config["config_hash"] for store in opened]
    config_hash = hashlib.sha256(
        json.dumps(
            {"sources": source_hashes, "fusion": fusion, "params": params}, sort_keys=True
        ).encode()
    ).hexdigest()[:16]
    return {
        **{k: v for k, v in opened[0].config.items() if k != "config"},
        "config_hash": config_hash,
        "config": {
            **base,
            "data": data,
            "classifiers": classifiers,
            "fusion": fusion,
            "fusion_params": params,
        },
        CLASSIFIER_AUROC: [store.classifier_auroc()[0] for store in opened],
        "fused_from": [
            {"store": recorded_path(s.path, out), "config_hash": h}
            for s, h in zip(opened, source_hashes, strict=True)
        ],
    }


def _fuse_shard(
    opened: Sequence[LabelStore],
    index: int,
    fuse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    auroc: torch.Tensor,
    config_hash: str,
) -> ShardContent:
    """Shard ``index`` of the fused store: the sources' uint8 maps ``[n_maps, R, R]`` fused
    by ``fuse(maps [N_clf, n_maps, 1, R, R], weights [N_clf, n_maps, 1])`` with weights from
    ``auroc [N_clf, 14]``; ids, targets and offsets as the sources', which must agree."""
    shards = [store.shard(index) for store in opened]
    first = shards[0]
    for store, shard in zip(opened[1:], shards[1:], strict=True):
        if shard.ids != first.ids or not torch.equal(shard.targets, first.targets):
            raise DollError(
                f"shard {index} of {store.path} holds other images or targets than {opened[0].path}"
            )
    observation = (
        torch.cat([first.targets[row][first.targets[row] >= 0] for row in range(len(first.ids))])
        if first.ids
        else torch.zeros(0, dtype=torch.long)
    )
    stacked = torch.stack([s.maps.float() / 255 for s in shards])[:, :, None]
    weights = auroc[:, observation][:, :, None]
    if stacked.shape[1]:
        maps = torch.round(fuse(stacked, weights)[:, 0] * 255).to(torch.uint8)
    else:
        maps = first.maps.clone()
    return ShardContent(
        index=index,
        config_hash=config_hash,
        ids=list(first.ids),
        targets=first.targets.clone(),
        maps=maps,
        offsets=first.offsets.clone(),
        stats=map_statistics(maps),
        skipped=list(first.skipped),
        nonfinite=sum(s.nonfinite for s in shards),
        no_signal=sum(s.no_signal for s in shards),
    )


def _write_fusion_report(
    out: Path, manifest: dict[str, Any], classifiers: int, seconds: float
) -> None:
    """The fused store's ``generation.json``: speed and size."""
    images = len(manifest["images"])
    total_bytes = sum(int(entry["bytes"]) for entry in manifest["shards"].values())
    report = {
        "seconds": round(seconds, 2),
        "images_this_run": images,
        "images_per_second": round(images / seconds, 2) if seconds > 0 else None,
        "classifiers": classifiers,
        "fused_from_stores": True,
        "bytes": total_bytes,
        "bytes_per_image": round(total_bytes / max(images, 1), 1),
    }
    atomic_write_text(out / "generation.json", json.dumps(report, indent=2) + "\n")


def fuse_stores(
    stores: Sequence[str | Path],
    fusion: str,
    out: str | Path,
    *,
    fusion_params: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Write the store ``out`` whose maps fuse the maps of ``stores`` (one classifier
    each) with the fusion plugin ``fusion``; the AUC-weighted fusion gets each
    classifier's validation AUROC per observation. Returns the new manifest.

    The plugin is called once per shard through
    :func:`~doll_core.labels.fusion.fuse_maps`, each of the shard's ``n_maps`` maps as one
    image with one target: maps ``[N_clf, n_maps, 1, R, R]`` and weights
    ``[N_clf, n_maps, 1]``, ``weights[k, i, 0]`` being classifier ``k``'s AUROC for the
    observation of map ``i`` (the :class:`~doll_core.interfaces.Fusion` contract with
    ``B = n_maps``, ``T = 1``).
    """
    registry = registry or get_registry()
    if not stores:
        raise DollError("fuse_stores needs at least one store")
    opened = [LabelStore(path) for path in stores]
    base = _check_compatible(opened)
    params = dict(fusion_params or {})
    plugin = registry.create("fusion", fusion, **params)
    out = Path(out).absolute()
    record = _fused_config(opened, base, fusion, params, out)
    auroc = validation_auroc(record[CLASSIFIER_AUROC])
    refuse_links_leaving(out, "label store")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG, json.dumps(record, indent=2) + "\n")
    started = time.perf_counter()

    def fuse(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return fuse_maps(plugin, fusion, maps, weights)

    for index in sorted(int(k) for k in opened[0].manifest["shards"]):
        write_shard(out, _fuse_shard(opened, index, fuse, auroc, record["config_hash"]))
    manifest = build_manifest(out, record["config_hash"], int(opened[0].config["total_shards"]))
    write_manifest(out, manifest)
    _write_fusion_report(out, manifest, len(opened), time.perf_counter() - started)
    return manifest
