"""Values for strict JSON: an undefined score (``nan``) is written as ``null``."""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every ``nan`` (an undefined score) as ``None``, in nested dicts,
    lists and tuples."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
