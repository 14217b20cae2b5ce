"""Fusion plugins on tiny hand-made maps, and the core's checks around them."""

from __future__ import annotations

import pytest
import torch

from doll_core.errors import DollError, PluginError
from doll_core.labels.fusion import fuse_maps
from doll_core.registry import get_registry

# three classifiers, one image, one target, 1 x 3 pixels
MAPS = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.5, 0.8], [0.4, 0.0, 0.6]]).view(3, 1, 1, 1, 3)


def _fuse(name: str, weights: torch.Tensor | None = None, **params: object) -> list[float]:
    plugin = get_registry().create("fusion", name, **params)
    return [round(v, 6) for v in fuse_maps(plugin, name, MAPS, weights).flatten().tolist()]


def test_mean_max_vote_geometric_mean() -> None:
    assert _fuse("mean") == [0.2, round(1 / 3, 6), 0.8]
    assert _fuse("max") == [0.4, 0.5, 1.0]
    # votes >= 0.5: pixel 0: none; pixel 1: two of three; pixel 2: all three
    assert _fuse("vote") == [0.0, 1.0, 1.0]
    assert _fuse("vote", quorum=0.7) == [0.0, 0.0, 1.0]
    # geometric mean: zero wherever one classifier says zero
    assert _fuse("geometric_mean") == [0.0, 0.0, round((1.0 * 0.8 * 0.6) ** (1 / 3), 6)]


def test_auc_weighted() -> None:
    weights = torch.tensor([0.9, 0.7, 0.5]).view(3, 1, 1)  # skills 0.4, 0.2, 0
    expected = [
        (0.4 * a + 0.2 * b) / 0.6 for a, b in zip([0.0, 0.5, 1.0], [0.2, 0.5, 0.8], strict=True)
    ]
    assert _fuse("auc_weighted", weights) == [round(v, 6) for v in expected]
    no_skill = torch.full((3, 1, 1), 0.5)
    assert _fuse("auc_weighted", no_skill) == _fuse("mean")  # falls back to the mean
    with pytest.raises(DollError, match="needs each classifier's validation AUROC"):
        _fuse("auc_weighted")


def test_inputs_and_outputs_are_checked() -> None:
    plugin = get_registry().create("fusion", "mean")
    with pytest.raises(DollError, match=r"post-processed into \[0, 1\]"):
        fuse_maps(plugin, "mean", MAPS * 2)
    with pytest.raises(DollError, match=r"weights must be \[N_clf, B, T\]"):
        fuse_maps(plugin, "mean", MAPS, torch.ones(3))

    class Broken:
        def fuse(self, maps: torch.Tensor, weights: object = None) -> torch.Tensor:
            return maps.sum(dim=0)  # can exceed 1

    with pytest.raises(PluginError, match="'broken' returned values outside"):
        fuse_maps(Broken(), "broken", MAPS)
