"""Classifier training: a real short run, resume after kill -9, config checks, DDP on gloo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from ranks import act_as_rank

from doll_core.checkpoint import build_classifier, load_classifier, read_classifier_meta
from doll_core.configuration import parse_config
from doll_core.errors import DollError
from doll_core.observations import OBSERVATIONS
from doll_core.training.augment import augment_batch
from doll_core.training.classifier import train_classifier
from doll_core.training.config import AugmentConfig, ClassifierTrainingConfig
from doll_core.training.distributed import launched_local_rank


def _values(data: Path, **changes: Any) -> dict[str, Any]:
    """The config of a tiny run, as JSON-ready values (a subprocess gets them by repr)."""
    values: dict[str, Any] = {
        "data": str(data),
        "backbone": "tiny_cnn",
        "backbone_params": {"width": 4},
        "image_size": 32,
        "batch_size": 8,
        "epochs": 3,
        "num_workers": 0,
        "lr": 3e-3,
        "seed": 3,
    }
    values.update(changes)
    return values


def _config(data: Path, **changes: Any) -> ClassifierTrainingConfig:
    return parse_config(ClassifierTrainingConfig, _values(data, **changes))


def test_a_short_run_writes_a_complete_run_folder(small_phantom: Path, tmp_path: Path) -> None:
    result = train_classifier(_config(small_phantom, epochs=2), tmp_path / "run")
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "metrics.json",
        "best.pt",
        "last.pt",
        "state.pt",
        "skipped.jsonl",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["history"]) == 2
    epoch = metrics["history"][-1]
    assert set(epoch["auroc"]) == set(OBSERVATIONS)
    assert epoch["train_images_per_second"] > 0 and epoch["epoch_seconds"] > 0
    assert epoch["val_images"] == 8
    _, meta = load_classifier(out / "best.pt", in_channels=1, image_size=32)
    assert meta.epoch == metrics["best_epoch"] and meta.training_config["backbone"] == "tiny_cnn"
    last, _ = load_classifier(out / "last.pt")
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(last.state_dict()[key], value.cpu())


def test_an_existing_run_is_not_overwritten_and_resumes_only_alike(
    small_phantom: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train_classifier(_config(small_phantom, epochs=1), out)
    with pytest.raises(DollError, match="already holds a training run; pass --resume"):
        train_classifier(_config(small_phantom, epochs=1), out)
    with pytest.raises(DollError, match=r"another config \(lr: 0\.003 -> 0\.01\)"):
        train_classifier(_config(small_phantom, epochs=2, lr=0.01), out, resume=True)
    longer = train_classifier(_config(small_phantom, epochs=2), out, resume=True)
    assert [e["epoch"] for e in longer.history] == [1, 2]


def _flip_a_weight_byte(state: Path) -> None:
    """Flip one byte inside the largest tensor record of a torch zip file: it still loads,
    with one weight changed."""
    with zipfile.ZipFile(state) as archive:
        record = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    data = bytearray(state.read_bytes())
    header = record.header_offset
    name_length = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(data[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    data[start + record.file_size // 2] ^= 0x40
    state.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "truncated", "pickled"])
def test_a_damaged_training_state_is_refused_on_resume_with_how_to_recover(
    small_phantom: Path, tmp_path: Path, damage: str
) -> None:
    out = tmp_path / "run"
    train_classifier(_config(small_phantom, epochs=1), out)
    state = out / "state.pt"
    if damage == "flipped":
        _flip_a_weight_byte(state)
        torch.load(state, weights_only=True)  # the damage alone does not stop a load
        expected = "is corrupted: its weights no longer match the checksum"
    elif damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
        expected = "is not a readable DoLL training state: it is truncated or corrupted"
    else:  # a state that unpickles objects: never advise converting it with --trusted
        torch.save({"format": "doll-training-state", "odd": _Odd()}, state)
        expected = "holds pickled Python objects that DoLL never writes there"
    with pytest.raises(DollError, match=expected) as caught:
        train_classifier(_config(small_phantom, epochs=2), out, resume=True)
    assert f"delete {state} to train this stage again" in str(caught.value)
    assert "convert-weights" not in str(caught.value)
    state.unlink()
    again = train_classifier(_config(small_phantom, epochs=2), out, resume=True)
    assert [e["epoch"] for e in again.history] == [1, 2]


class _Odd:
    """An object ``weights_only`` loading refuses."""


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from doll_core.configuration import parse_config
    from doll_core.training.classifier import train_classifier
    from doll_core.training.config import ClassifierTrainingConfig

    config = parse_config(ClassifierTrainingConfig, {config})

    def kill(epoch, step):
        if epoch == 1 and step == 1:  # in the middle of the second epoch
            os.kill(os.getpid(), signal.SIGKILL)

    train_classifier(config, sys.argv[1], on_step=kill)
    """
)


def test_resume_after_kill_9_gives_the_same_weights(small_phantom: Path, tmp_path: Path) -> None:
    values = _values(small_phantom)
    config = _config(small_phantom)
    straight = train_classifier(config, tmp_path / "straight")

    killed = tmp_path / "killed"
    script = KILLER.replace("{config}", repr(values))
    process = subprocess.run(
        [sys.executable, "-c", script, str(killed)], check=False, capture_output=True, text=True
    )
    assert process.returncode == -9, process.stderr
    metrics = json.loads((killed / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["history"]] == [1]  # killed during epoch 2
    resumed = train_classifier(config, killed, resume=True)

    assert [e["epoch"] for e in resumed.history] == [1, 2, 3]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.history[-1]["auroc"] == straight.history[-1]["auroc"]


def test_augmentation_is_reproducible_small_and_never_flips_by_default() -> None:
    images = torch.zeros(4, 1, 32, 32)
    images[..., :16] = 1.0  # bright image-left half
    config = AugmentConfig(brightness=0.0, contrast=0.0)
    first = augment_batch(images, config, torch.Generator().manual_seed(1))
    again = augment_batch(images, config, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first[..., :12].mean() > 0.9) and (first[..., 20:].mean() < 0.1)  # still on the left
    flipped = augment_batch(
        images,
        AugmentConfig(
            hflip=True, rotate_degrees=0, translate=0, scale=(1, 1), brightness=0, contrast=0
        ),
        torch.Generator().manual_seed(2),
    )
    lefts = flipped[..., :16].mean(dim=(1, 2, 3))
    assert set(lefts.round().tolist()) == {0.0, 1.0}  # some flipped, some not
    off = AugmentConfig(enabled=False)
    assert augment_batch(images, off, torch.Generator()) is images


def test_bad_configs_name_the_key(small_phantom: Path) -> None:
    with pytest.raises(DollError, match="batch_size: Input should be greater than or equal to 1"):
        _config(small_phantom, batch_size=0)
    with pytest.raises(DollError, match="epoch: unknown key"):
        _config(small_phantom, epoch=3)
    with pytest.raises(DollError, match="unknown backbone 'tiny_cn'; did you mean 'tiny_cnn'"):
        train_classifier(_config(small_phantom, backbone="tiny_cn"), "/tmp/never-written")


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, weights: str) -> None:
    act_as_rank(rank, world, port)
    config = _config(Path(data), epochs=1, batch_size=4)
    result = train_classifier(config, out)
    torch.save(result.model.state_dict(), Path(weights) / f"rank{rank}.pt")
    (Path(weights) / f"history{rank}.json").write_text(json.dumps(result.history))


def test_two_gloo_processes_end_with_identical_weights(
    small_phantom: Path, tmp_path: Path, free_port: int
) -> None:
    out, weights = tmp_path / "ddp", tmp_path / "weights"
    weights.mkdir()
    mp.spawn(
        _ddp_worker,
        args=(2, free_port, str(small_phantom), str(out), str(weights)),
        nprocs=2,
        join=True,
    )
    first = torch.load(weights / "rank0.pt", weights_only=True)
    second = torch.load(weights / "rank1.pt", weights_only=True)
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    # and training moved them away from the shared initial weights
    torch.manual_seed(3)
    initial = build_classifier(read_classifier_meta(out / "last.pt")).state_dict()
    assert any(not torch.equal(first[k], initial[k]) for k in initial if k.endswith("weight"))
    histories = [json.loads((weights / f"history{r}.json").read_text()) for r in (0, 1)]
    reduced = ("train_loss", "val_loss", "mean_auroc", "auroc", "val_images")
    # metrics are reduced across ranks: every rank knows the same numbers
    assert [{k: e[k] for k in reduced} for e in histories[0]] == [
        {k: e[k] for k in reduced} for e in histories[1]
    ]
    assert histories[0][0]["val_images"] == 8  # both halves of the validation set counted
    assert (out / "state.pt").is_file() and (out / "best.pt").is_file()  # written by rank 0


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, 0),
        ({"LOCAL_RANK": "1"}, 1),  # read whenever set, also for one process
        ({"WORLD_SIZE": "2", "RANK": "1"}, 1),  # one machine, no LOCAL_RANK: the rank
        ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}, 1),
    ],
)
def test_local_rank_is_read_in_one_place(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: int
) -> None:
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert launched_local_rank() == expected


def test_an_epoch_line_counts_the_images_it_skipped() -> None:
    from doll_core.training.loop import skipped_note

    assert skipped_note({"epoch": 1, "skipped": []}) == ""
    one = skipped_note({"skipped": [{"path": "a.jpg", "reason": "corrupt"}]})
    assert one == ", 1 image skipped (listed in skipped.jsonl)"
    assert skipped_note({"skipped": [{}, {}, {}]}).startswith(", 3 images skipped")


@pytest.mark.parametrize("split", ["train", "valid"])
def test_no_model_is_trained_or_scored_on_nothing(
    small_phantom: Path, tmp_path: Path, split: str
) -> None:
    """Issue 29, item 4: a split whose every image is unreadable stops training with its
    first reason (it used to finish with AUROC nan and exit 0)."""
    root = tmp_path / "phantom"
    shutil.copytree(small_phantom / "CheXpert-v1.0-small", root / "CheXpert-v1.0-small")
    for image in (root / "CheXpert-v1.0-small" / split).rglob("*.jpg"):
        image.write_bytes(b"not an image")
    config = _config(root, epochs=1)
    with pytest.raises(DollError, match=f"no image of the {split}[a-z]* split.*could be read"):
        train_classifier(config, tmp_path / "run")
