"""Comparing state dicts before loading, so that a mismatch is one clear message."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def describe_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> str | None:
    """``None`` when ``given`` has exactly the names and shapes of ``expected``; else a
    summary such as ``missing: a, b (2); shape differs: conv1.weight (1)``."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong_shape = sorted(
        k for k in set(given) & set(expected) if given[k].shape != expected[k].shape
    )
    parts = [
        f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''} ({len(keys)})"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape differs", wrong_shape),
        )
        if keys
    ]
    return "; ".join(parts) or None
