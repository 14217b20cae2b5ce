"""Segmentation: metrics, weight transfer per init mode, frozen parts, resume, DDP."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from ranks import act_as_rank

from doll_core.checkpoint import load_classifier
from doll_core.configuration import parse_config
from doll_core.errors import DollError
from doll_core.metrics.segmentation import SegmentationScores
from doll_core.segmentation.config import FinetuneConfig, PretrainConfig
from doll_core.segmentation.finetune import finetune
from doll_core.segmentation.models import load_segmenter
from doll_core.segmentation.pretrain import pretrain


def test_iou_and_dice_by_hand_with_an_absent_class() -> None:
    truth = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    prediction = torch.zeros_like(truth)
    truth[0, 0, 0] = True  # class a: 2 pixels in image 0
    prediction[0, 0, 0, 0] = True  # 1 of them found
    prediction[1, 0, 1, 1] = True  # and a false positive in image 1
    truth[1, 1] = True  # class b: 4 pixels in image 1, none predicted
    # class c: absent everywhere
    scores = SegmentationScores(["a", "b", "c"])
    scores.update(prediction, truth)
    iou, dice = scores.iou(), scores.dice()
    assert iou[0] == pytest.approx(1 / 3)  # intersection 1, union 3
    assert dice[0] == pytest.approx(2 * 1 / (2 + 2))
    assert iou[1] == 0.0 and dice[1] == 0.0
    assert math.isnan(iou[2]) and math.isnan(dice[2])
    summary = scores.summary()
    assert summary["miou"] == pytest.approx((1 / 3 + 0.0) / 2)  # c left out of the mean
    assert summary["iou"]["c"] is None


def _pretrain_values(store: Path, classifier: Path, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "labels": str(store),
        "encoder_from": str(classifier),
        "image_size": 32,
        "epochs": 2,
        "batch_size": 4,
        "num_workers": 0,
        "device": "cpu",
        "seed": 5,
    }
    values.update(changes)
    return values


@pytest.fixture(scope="module")
def pretrained(
    small_label_store: Path, resnet_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "run"
    pretrain(
        parse_config(PretrainConfig, _pretrain_values(small_label_store, resnet_checkpoint)), out
    )
    return out


def _finetune_config(data: Path, **changes: Any) -> FinetuneConfig:
    """A seconds-long fine-tuning on the small phantom's organ set."""
    values: dict[str, Any] = {
        "data": str(data / "organs"),
        "image_size": 32,
        "epochs": 2,
        "eval_interval": 2,
        "batch_size": 2,
        "num_workers": 0,
        "device": "cpu",
        "encoder": "resnet18",
    }
    values.update(changes)
    return parse_config(FinetuneConfig, values)


def _finetune(data: Path, out: Path, **changes: Any) -> dict[str, Any]:
    return finetune(_finetune_config(data, **changes), out)


def _encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("net.encoder.")}


def test_pretraining_starts_from_the_classifier_encoder(
    small_label_store: Path, resnet_checkpoint: Path, tmp_path: Path
) -> None:
    values = _pretrain_values(
        small_label_store,
        resnet_checkpoint,
        epochs=1,
        max_steps_per_epoch=1,
        lr=1e-12,
        weight_decay=0.0,
    )
    pretrain(parse_config(PretrainConfig, values), tmp_path / "run")
    model, meta = load_segmenter(tmp_path / "run" / "best.pt")
    classifier, cmeta = load_classifier(resnet_checkpoint)
    assert meta.encoder == "resnet18" and meta.mean == cmeta.mean
    for key, value in classifier.net.state_dict().items():
        if key.startswith("fc.") or "num_batches_tracked" in key:
            continue
        if "running" in key:
            continue  # one training step moves BatchNorm statistics
        torch.testing.assert_close(
            model.state_dict()[f"net.encoder.{key}"], value, rtol=0, atol=1e-9
        )


def test_init_modes_transfer_what_they_promise(
    pretrained: Path, resnet_checkpoint: Path, small_phantom: Path, tmp_path: Path
) -> None:
    source, _ = load_segmenter(pretrained / "best.pt")
    doll = _finetune(
        small_phantom,
        tmp_path / "doll",
        init="doll",
        init_path=str(pretrained / "best.pt"),
        epochs=1,
        eval_interval=1,
        lr=1e-12,
        weight_decay=0.0,
        mode="adapter_only",
    )
    tuned, meta = load_segmenter(tmp_path / "doll" / "best.pt")
    assert meta.classes == ("clavicles", "heart", "lungs") and doll["init"]["init"] == "doll"
    for key, value in source.state_dict().items():
        if "segmentation_head" in key:
            continue
        assert torch.equal(tuned.state_dict()[key], value), key  # encoder and decoder
    assert tuned.output_conv().out_channels == 3

    _finetune(
        small_phantom,
        tmp_path / "clf",
        init="classifier",
        init_path=str(resnet_checkpoint),
        epochs=1,
        eval_interval=1,
        mode="adapter_only",
    )
    from_classifier, _ = load_segmenter(tmp_path / "clf" / "best.pt")
    classifier, _ = load_classifier(resnet_checkpoint)
    for key, value in classifier.net.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(from_classifier.state_dict()[f"net.encoder.{key}"], value), key
    decoder = [k for k in source.state_dict() if k.startswith("net.decoder.") and "weight" in k]
    assert decoder and any(
        not torch.equal(from_classifier.state_dict()[k], source.state_dict()[k]) for k in decoder
    )

    user = tmp_path / "user.pt"
    torch.save({k: v for k, v in classifier.net.state_dict().items()}, user)
    report = _finetune(
        small_phantom,
        tmp_path / "user",
        init="checkpoint",
        init_path=str(user),
        epochs=1,
        eval_interval=1,
    )["init"]
    assert "net.encoder.conv1.weight" in report["loaded"] and "fc.weight" in report["not_loaded"]
    # a file of another model fits next to nothing: refused, unless allow_partial
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3), "conv.weight": torch.zeros(8, 1, 3, 3)}, other)
    options = {"init": "checkpoint", "init_path": str(other), "epochs": 1, "eval_interval": 1}
    with pytest.raises(DollError, match=r"other\.pt: only 0 of the model's \d+ tensors fit"):
        _finetune(small_phantom, tmp_path / "other", **options)
    partial = _finetune(small_phantom, tmp_path / "partial", allow_partial=True, **options)
    assert partial["init"]["loaded"] == []
    with pytest.raises(DollError, match="init 'doll' needs init_path"):
        parse_config(FinetuneConfig, {"data": str(small_phantom), "init": "doll"})


@pytest.mark.parametrize("mode", ["frozen_encoder", "adapter_only"])
def test_frozen_parts_do_not_change_after_a_step(
    mode: str, pretrained: Path, small_phantom: Path, tmp_path: Path
) -> None:
    source, _ = load_segmenter(pretrained / "best.pt")
    _finetune(
        small_phantom,
        tmp_path / mode,
        init="doll",
        init_path=str(pretrained / "best.pt"),
        epochs=1,
        eval_interval=1,
        lr=0.01,
        mode=mode,
        adapter_blocks=mode == "adapter_only",
    )
    tuned, _ = load_segmenter(tmp_path / mode / "best.pt")
    after, before = tuned.state_dict(), source.state_dict()
    frozen = [k for k in before if k.startswith("net.encoder.")]
    if mode == "adapter_only":
        frozen = [k for k in before if "segmentation_head" not in k]
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    trained = [k for k in after if "segmentation_head" in k and k.endswith("weight")]
    assert trained  # the new layer exists and was trained (checked below by the decoder too)
    if mode == "frozen_encoder":
        decoder = [k for k in before if k.startswith("net.decoder.") and k.endswith("weight")]
        assert any(not torch.equal(after[k], before[k]) for k in decoder)


KILLER = textwrap.dedent(
    """
    import os, signal, sys, warnings
    warnings.simplefilter("ignore")
    from doll_core.configuration import parse_config
    from doll_core.segmentation.config import PretrainConfig
    from doll_core.segmentation.pretrain import pretrain

    def kill(epoch, step):
        if epoch == 1 and step == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    pretrain(parse_config(PretrainConfig, {values}), sys.argv[1], on_step=kill)
    """
)


def test_pretraining_resumes_after_kill_9(
    pretrained: Path, small_label_store: Path, resnet_checkpoint: Path, tmp_path: Path
) -> None:
    values = _pretrain_values(small_label_store, resnet_checkpoint)
    script = KILLER.replace("{values}", repr(values))
    process = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert process.returncode == -9, process.stderr
    resumed = pretrain(parse_config(PretrainConfig, values), tmp_path / "run", resume=True)
    reference, _ = load_segmenter(pretrained / "last.pt")
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


class Interrupt(Exception):
    pass


def test_finetuning_resumes_to_the_same_result(small_phantom: Path, tmp_path: Path) -> None:
    straight = _finetune(small_phantom, tmp_path / "straight", n_labeled=2, seed=2)

    def stop(epoch: int, step: int) -> None:
        if epoch == 1:
            raise Interrupt

    config = _finetune_config(small_phantom, n_labeled=2, seed=2)
    with pytest.raises(Interrupt):
        finetune(config, tmp_path / "cut", on_step=stop)
    resumed = finetune(config, tmp_path / "cut", resume=True)
    assert resumed["curve"] == straight["curve"] and resumed["test"] == straight["test"]
    assert straight["train_images"] == 2


def test_with_state_every_a_run_resumes_from_its_last_state(
    small_phantom: Path, tmp_path: Path
) -> None:
    """state.pt every second epoch: a kill in the fourth epoch repeats the third."""
    changes = {"n_labeled": 2, "seed": 3, "epochs": 4, "eval_interval": 1, "state_every": 2}
    straight = _finetune(small_phantom, tmp_path / "straight", **changes)
    saved: list[int] = []

    def stop(epoch: int, step: int) -> None:
        state = tmp_path / "cut" / "state.pt"
        saved.append(torch.load(state, weights_only=False)["epoch"] if state.exists() else 0)
        if epoch == 3:
            raise Interrupt

    config = _finetune_config(small_phantom, **changes)
    with pytest.raises(Interrupt):
        finetune(config, tmp_path / "cut", on_step=stop)
    assert saved == [0, 0, 2, 2]  # no state after epoch 1 or 3, one after epoch 2
    history = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert len(history) == 3  # metrics.json still has every finished epoch
    resumed = finetune(config, tmp_path / "cut", resume=True)
    assert resumed["curve"] == straight["curve"] and resumed["test"] == straight["test"]


def test_cached_samples_are_read_once_and_change_no_result(
    small_phantom: Path, tmp_path: Path
) -> None:
    from doll_core.data.cache import CachedSamples

    reads: list[int] = []

    class Counting:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            reads.append(index)
            return {"image": torch.full((1, 2, 2), float(index))}

    cached = CachedSamples(Counting())
    assert len(cached) == 3
    for _ in range(4):
        assert [float(cached[i]["image"][0, 0, 0]) for i in range(3)] == [0.0, 1.0, 2.0]
    assert reads == [0, 1, 2]
    changes = {"n_labeled": 2, "seed": 1, "epochs": 3, "eval_interval": 2}
    plain = _finetune(small_phantom, tmp_path / "plain", **changes)
    cached_run = _finetune(small_phantom, tmp_path / "cached", cache_samples=True, **changes)
    assert cached_run["curve"] == plain["curve"] and cached_run["test"] == plain["test"]


def _rank(rank: int, world: int, port: int, values: dict[str, Any], out: str, weights: str) -> None:
    act_as_rank(rank, world, port)
    trainer = pretrain(parse_config(PretrainConfig, values), out)
    torch.save(trainer.model.state_dict(), Path(weights) / f"rank{rank}.pt")


def test_two_gloo_processes_pretrain_identical_weights(
    small_label_store: Path, resnet_checkpoint: Path, tmp_path: Path, free_port: int
) -> None:
    values = _pretrain_values(small_label_store, resnet_checkpoint, epochs=1)
    weights = tmp_path / "weights"
    weights.mkdir()
    mp.spawn(
        _rank,
        args=(2, free_port, values, str(tmp_path / "run"), str(weights)),
        nprocs=2,
        join=True,
    )
    first = torch.load(weights / "rank0.pt", weights_only=True)
    second = torch.load(weights / "rank1.pt", weights_only=True)
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    assert (tmp_path / "run" / "best.pt").is_file()


def test_compare_initialisations_writes_table_and_curves(
    pretrained: Path, resnet_checkpoint: Path, small_phantom: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from doll_core.cli import app

    arguments = [
        "compare-inits",
        "--data",
        str(small_phantom / "organs"),
        "--out",
        str(tmp_path / "cmp"),
        "--classifier",
        str(resnet_checkpoint),
        "--doll",
        str(pretrained / "best.pt"),
        "--budget",
        "1",
        "--budget",
        "all",
        "--seeds",
        "2",
        "--set",
        "image_size=64",
        "--set",
        "epochs=1",
        "--set",
        "eval_interval=1",
        "--set",
        "batch_size=1",
        "--set",
        "num_workers=0",
        "--set",
        'device="cpu"',
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    scores, differences = (tmp_path / "cmp" / "comparison.md").read_text().split("\n\n")
    table = scores.splitlines()
    assert table[0] == "| init | 1 labels (1 images) | all labels (2 images) |"
    assert [line.split("|")[1].strip() for line in table[2:]] == ["random", "classifier", "doll"]
    assert "±" in table[2]
    paired = [line.split("|")[1:4] for line in differences.splitlines()[2:]]
    assert [[cell.strip() for cell in row] for row in paired] == [
        ["1", "doll - random", "2"],
        ["1", "doll - classifier", "2"],
        ["all", "doll - random", "2"],
        ["all", "doll - classifier", "2"],
    ]
    report = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert len(report["runs"]) == 3 * 2 * 2
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000
    again = CliRunner().invoke(app, arguments)  # finished runs are reused, not retrained
    assert again.exit_code == 0
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text()) == report
    changed = CliRunner().invoke(app, [*arguments, "--set", "lr=0.5"])
    assert changed.exit_code == 2 and "holds a run with other settings" in changed.stderr
    for kind, swapped in (("doll", resnet_checkpoint), ("classifier", pretrained / "best.pt")):
        swap = arguments.index(f"--{kind}") + 1
        wrong = [*arguments[:swap], str(swapped), *arguments[swap + 1 :]]
        wrong[wrong.index("--out") + 1] = str(tmp_path / f"wrong-{kind}")
        refused = CliRunner().invoke(app, wrong)  # read before the random runs train
        assert refused.exit_code == 2, refused.output
        assert f"init {kind!r}: {swapped}" in refused.stderr and "Traceback" not in refused.output
        assert not (tmp_path / f"wrong-{kind}").exists()
