"""Label generation and the store: content, kill -9 and resume, corruption, two ranks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from ranks import act_as_rank
from typer.testing import CliRunner

from doll_core.cli import app
from doll_core.configuration import parse_config
from doll_core.digests import sha256_of
from doll_core.errors import DollError
from doll_core.labels.config import LabelGenerationConfig
from doll_core.labels.dataset import LabeledImages
from doll_core.labels.generate import generate_labels
from doll_core.labels.store import LabelStore, check_store, read_shard, shard_indices
from doll_core.observations import OBSERVATIONS


def _values(phantom: Path, checkpoints: list[Path], **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "data": str(phantom),
        "classifiers": [str(p) for p in checkpoints],
        "explainer": "integrated_gradients",
        "explainer_params": {"n_steps": 4},
        "shard_size": 6,
        "batch_size": 4,
        "label_size": 16,
        "limit": 20,
        "device": "cpu",
    }
    values.update(changes)
    return values


def _config(phantom: Path, checkpoints: list[Path], **changes: Any) -> LabelGenerationConfig:
    return parse_config(LabelGenerationConfig, _values(phantom, checkpoints, **changes))


def _shard_bytes(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("shard-*.pt"))}


def _copy_store(source: Path, target: Path) -> Path:
    """A byte copy of the store ``source`` (a flat folder) at ``target``."""
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.fixture(scope="module")
def reference_store(
    small_phantom: Path, tiny_checkpoints: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("labels") / "store"
    generate_labels(_config(small_phantom, tiny_checkpoints), out)
    return out


def test_store_content(reference_store: Path, small_phantom: Path) -> None:
    manifest = json.loads((reference_store / "manifest.json").read_text())
    assert manifest["complete"] and manifest["total_shards"] == 4
    assert len(manifest["images"]) == 20
    assert [s["images"] for s in manifest["shards"].values()] == [6, 6, 6, 2]
    store = LabelStore(reference_store)
    rows = {
        line.split(",")[0]: line.split(",")[5:]
        for line in (small_phantom / "CheXpert-v1.0-small/train.csv").read_text().splitlines()[1:]
    }
    explained = 0
    for image_id in store.ids:
        observations, maps = store.labels(image_id)
        # positive targets: label 1, or -1 under U-Ones; No Finding is never explained
        expected = [
            k
            for k, cell in enumerate(rows[image_id])
            if cell in ("1.0", "-1.0") and OBSERVATIONS[k] != "No Finding"
        ]
        assert observations == expected
        assert maps.dtype == torch.uint8 and tuple(maps.shape) == (len(expected), 16, 16)
        explained += len(expected)
    assert explained > 0
    generation = json.loads((reference_store / "generation.json").read_text())
    assert generation["images_per_second"] > 0 and generation["bytes_per_image"] > 0


def test_labelled_images_for_pre_training(reference_store: Path) -> None:
    soft = LabeledImages(reference_store, size=32)
    hard = LabeledImages(reference_store, size=32, threshold=0.5, background_weight=0.25)
    index = next(i for i in range(len(soft)) if soft.store.labels(soft.ids[i])[0])
    sample, binary = soft[index], hard[index]
    assert sample["image"].shape == (1, 32, 32) and sample["target"].shape == (14, 32, 32)
    assert float(sample["target"].min()) >= 0 and float(sample["target"].max()) <= 1
    observations, _ = soft.store.labels(soft.ids[index])
    others = [k for k in range(14) if k not in observations]
    assert sample["target"][others].abs().sum() == 0
    assert set(binary["target"].unique().tolist()) <= {0.0, 1.0}
    assert set(binary["weight"].unique().tolist()) <= {0.25, 1.0}
    assert torch.equal(sample["weight"] == 1.0, sample["target"] > 0)


KILLER = textwrap.dedent(
    """
    import os, signal, sys, warnings
    warnings.simplefilter("ignore")
    from doll_core.configuration import parse_config
    from doll_core.labels.config import LabelGenerationConfig
    from doll_core.labels.generate import generate_labels

    config = parse_config(LabelGenerationConfig, {values})

    def kill(shard, batch):
        if shard == 2 and batch == 0:  # in the middle of the third shard
            os.kill(os.getpid(), signal.SIGKILL)

    generate_labels(config, sys.argv[1], on_batch=kill)
    """
)


def test_kill_9_then_resume_gives_the_same_bytes(
    reference_store: Path, small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    script = KILLER.replace("{values}", repr(_values(small_phantom, tiny_checkpoints)))
    process = subprocess.run(
        [sys.executable, "-c", script, str(store)], check=False, capture_output=True, text=True
    )
    assert process.returncode == -9, process.stderr
    assert shard_indices(store) == [0, 1]  # the killed shard left nothing behind
    assert not list(store.glob(".*tmp*"))
    generate_labels(_config(small_phantom, tiny_checkpoints), store, resume=True)
    assert _shard_bytes(store) == _shard_bytes(reference_store)
    assert json.loads((store / "manifest.json").read_text()) == json.loads(
        (reference_store / "manifest.json").read_text()
    )
    # the completeness of Integrated Gradients covers the store, not only the resumed part
    resumed, whole = (
        json.loads((s / "generation.json").read_text())["explainer"]["completeness"]
        for s in (store, reference_store)
    )
    assert resumed["maps"] == whole["maps"] > 0 and resumed["shards"] == whole["shards"] == 4
    for key in ("mean_abs_delta", "mean_abs_gain", "relative_delta"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-9), key


def test_a_corrupted_shard_is_detected_and_regenerated(
    reference_store: Path, small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    store = _copy_store(reference_store, tmp_path / "store")
    shard = store / "shard-00001.pt"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DollError, match="checksum does not match the manifest"):
        LabelStore(store).labels(LabelStore(store).ids[7])  # an image of shard 1
    generate_labels(_config(small_phantom, tiny_checkpoints), store, resume=True)
    assert _shard_bytes(store) == _shard_bytes(reference_store)


def test_a_shard_swapped_for_another_is_made_again_on_resume(
    reference_store: Path, small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    """Its manifest entry edited to match (size and SHA-256), only its contents tell: the
    one store check finds it, and the resume makes it again (as doll doctor's plan says)."""
    store = _copy_store(reference_store, tmp_path / "store")
    swapped = store / "shard-00003.pt"
    swapped.write_bytes((store / "shard-00000.pt").read_bytes())
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["shards"]["3"].update(sha256=sha256_of(swapped), bytes=swapped.stat().st_size)
    (store / "manifest.json").write_text(json.dumps(manifest))
    check = check_store(store)
    assert check.bad == {3: "contents differ from the manifest"} and check.valid == {0, 1, 2}
    assert [issue.kind for issue in check.issues] == ["shard"]
    generate_labels(_config(small_phantom, tiny_checkpoints), store, resume=True)
    assert _shard_bytes(store) == _shard_bytes(reference_store)
    assert not check_store(store).issues


def test_an_unreadable_manifest_is_one_clear_error(reference_store: Path, tmp_path: Path) -> None:
    store = _copy_store(reference_store, tmp_path / "store")
    (store / "manifest.json").write_text("{not json")
    with pytest.raises(DollError, match=r"manifest\.json: not readable JSON"):
        LabelStore(store)


def test_a_shard_file_beyond_the_store_is_never_adopted(
    reference_store: Path, small_phantom: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    store = _copy_store(reference_store, tmp_path / "store")
    (store / "shard-00001.pt").unlink()
    stray = store / "shard-00009.pt"  # a copied shard with this config's hash
    stray.write_bytes((reference_store / "shard-00000.pt").read_bytes())
    manifest = generate_labels(_config(small_phantom, tiny_checkpoints), store, resume=True)
    assert manifest["complete"] and sorted(manifest["shards"]) == ["0", "1", "2", "3"]
    assert len(manifest["images"]) == 20
    assert stray.is_file()  # not the store's to delete; left for doll doctor to report
    assert _shard_bytes(store) == {**_shard_bytes(reference_store), stray.name: stray.read_bytes()}


def test_a_missing_manifest_is_rebuilt(reference_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for path in reference_store.iterdir():
        if path.name != "manifest.json":
            (store / path.name).write_bytes(path.read_bytes())
    rebuilt = LabelStore(store).manifest
    assert rebuilt == json.loads((reference_store / "manifest.json").read_text())
    assert (store / "manifest.json").is_file()


def test_existing_stores_are_protected(
    reference_store: Path, small_phantom: Path, tiny_checkpoints: list[Path]
) -> None:
    with pytest.raises(DollError, match="already holds a label store; pass --resume"):
        generate_labels(_config(small_phantom, tiny_checkpoints), reference_store)
    with pytest.raises(DollError, match="holds labels of another config"):
        generate_labels(
            _config(small_phantom, tiny_checkpoints, fusion="max"), reference_store, resume=True
        )
    assert read_shard(reference_store / "shard-00000.pt").index == 0


def _rank(rank: int, world: int, port: int, values: dict[str, Any], out: str) -> None:
    act_as_rank(rank, world, port)
    generate_labels(parse_config(LabelGenerationConfig, values), out)


def test_two_gloo_ranks_make_the_same_store(
    reference_store: Path,
    small_phantom: Path,
    tiny_checkpoints: list[Path],
    tmp_path: Path,
    free_port: int,
) -> None:
    out = tmp_path / "ranked"
    values = _values(small_phantom, tiny_checkpoints)
    mp.spawn(_rank, args=(2, free_port, values, str(out)), nprocs=2, join=True)
    assert _shard_bytes(out) == _shard_bytes(reference_store)
    assert json.loads((out / "manifest.json").read_text()) == json.loads(
        (reference_store / "manifest.json").read_text()
    )
    assert json.loads((out / "generation.json").read_text())["world_size"] == 2


def test_labels_cli(reference_store: Path, small_phantom: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    report = runner.invoke(
        app,
        ["labels", "inspect", str(reference_store), "--json", "--grid", str(tmp_path / "grid.png")],
    )
    assert report.exit_code == 0, report.output
    data = json.loads(report.stdout.split("\nwrote")[0])
    assert data["images"] == 20 and data["complete"] and sum(data["maps_per_observation"].values())
    assert (tmp_path / "grid.png").stat().st_size > 1000
    scored = runner.invoke(
        app, ["labels", "score", str(reference_store), "--data", str(small_phantom)]
    )
    assert scored.exit_code == 0 and json.loads(scored.stdout)["maps"] > 0
    missing = runner.invoke(app, ["labels", "inspect", str(tmp_path)])
    assert missing.exit_code == 2 and "is not a DoLL label store" in missing.stderr
