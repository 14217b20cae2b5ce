"""The classifier checkpoint: round trip and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from doll_core.checkpoint import (
    ClassifierMeta,
    build_classifier,
    load_classifier,
    read_classifier_meta,
    save_classifier,
)
from doll_core.errors import DollError


def _meta(**changes: object) -> ClassifierMeta:
    values: dict[str, object] = {
        "backbone": "tiny_cnn",
        "backbone_params": {"width": 4},
        "in_channels": 1,
        "image_size": 32,
        "mean": (0.5,),
        "std": (0.25,),
        "val_auroc": {"Cardiomegaly": 0.75, "Fracture": float("nan")},
        "epoch": 3,
    }
    values.update(changes)
    return ClassifierMeta(**values)  # type: ignore[arg-type]


def test_round_trip_gives_the_same_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier(_meta()).eval()
    path = tmp_path / "c.pt"
    save_classifier(path, model, _meta())
    loaded, meta = load_classifier(path, in_channels=1, image_size=32)
    images = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    assert meta.backbone == "tiny_cnn" and meta.backbone_params == {"width": 4}
    assert meta.val_auroc == {"Cardiomegaly": 0.75, "Fracture": None}
    assert meta.epoch == 3 and not loaded.training
    torch.testing.assert_close(loaded.mean, torch.full((1, 1, 1, 1), 0.5))


def test_mismatches_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_classifier(path, build_classifier(_meta()), _meta())
    with pytest.raises(DollError, match="in_channels is 1 in the checkpoint, 3 here"):
        load_classifier(path, in_channels=3)
    with pytest.raises(DollError, match="image_size is 32 in the checkpoint, 224 here"):
        load_classifier(path, image_size=224)

    payload = torch.load(path, weights_only=True)
    payload["meta"]["backbone_params"] = {"width": 8}
    torch.save(payload, tmp_path / "wider.pt")
    with pytest.raises(DollError, match=r"weights do not fit backbone 'tiny_cnn'.*shape differs"):
        load_classifier(tmp_path / "wider.pt")

    payload = torch.load(path, weights_only=True)
    payload["meta"]["observations"] = ["Cardiomegaly", "Edema"]
    torch.save(payload, tmp_path / "two.pt")
    with pytest.raises(DollError, match=r"trained on observations \['Cardiomegaly', 'Edema'\]"):
        read_classifier_meta(tmp_path / "two.pt")

    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(DollError, match=r"format version 99; .* upgrade DoLL"):
        load_classifier(tmp_path / "future.pt")

    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(DollError, match="not a DoLL classifier checkpoint"):
        load_classifier(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DollError, match="not a readable DoLL classifier checkpoint"):
        load_classifier(tmp_path / "text.pt")
    with pytest.raises(DollError, match="checkpoint not found"):
        load_classifier(tmp_path / "absent.pt")
