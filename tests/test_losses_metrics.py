"""Masked BCE and AUROC against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from doll_core.metrics import auroc, masked_auroc_per_class
from doll_core.training.losses import masked_bce_with_logits
from doll_core.training.schedule import warmup_cosine


def test_masked_bce_ignores_masked_labels() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    # by hand: -log(sigmoid(0)) = log 2; -log(1 - sigmoid(-1)) = log(1 + e^-1);
    # -log(sigmoid(3)) = log(1 + e^-3); the masked (0, 1) term is left out
    expected = (math.log(2) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 3
    assert masked_bce_with_logits(logits, labels, mask).item() == pytest.approx(expected, rel=1e-6)
    # a masked label can be anything without changing the loss or receiving a gradient
    logits.requires_grad_(True)
    other = labels.clone()
    other[0, 1] = 1.0
    loss = masked_bce_with_logits(logits, other, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad[0, 1] == 0


def test_masked_bce_with_nothing_counted_is_zero() -> None:
    logits = torch.randn(2, 3, requires_grad=True)
    loss = masked_bce_with_logits(logits, torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def test_auroc_by_hand_with_ties() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # pairs (positive, negative): 0.35>0.1 ✓, 0.35<0.4 ✗, 0.8>0.1 ✓, 0.8>0.4 ✓,
    # 0.4>0.1 ✓, 0.4=0.4 ½  ->  4.5 / 6
    assert auroc(scores, labels) == pytest.approx(4.5 / 6)
    assert auroc(torch.tensor([0.2, 0.9]), torch.tensor([0, 1])) == 1.0
    assert auroc(torch.tensor([0.9, 0.2]), torch.tensor([0, 1])) == 0.0
    assert math.isnan(auroc(torch.tensor([0.3, 0.5]), torch.tensor([1, 1])))


def test_masked_auroc_per_class_uses_only_counted_rows() -> None:
    scores = torch.tensor([[0.9, 0.2], [0.1, 0.8], [0.5, 0.7]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [False, True]])
    first, second = masked_auroc_per_class(scores, labels, mask)
    assert first == 1.0  # row 2 (0.5, negative) would not change it, but it is left out
    assert second == 1.0  # 0.8 beats 0.2 and 0.7
    mask[1, 1] = False
    assert math.isnan(masked_auroc_per_class(scores, labels, mask)[1])


def test_warmup_then_cosine() -> None:
    factors = [warmup_cosine(s, warmup_steps=4, total_steps=12, floor=0.1) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[8] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert factors[12] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
