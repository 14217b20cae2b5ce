"""Values for strict JSON: an undefined score (``nan``, or an infinity) is written as
``null``, which every JSON reader takes (``NaN`` is not JSON: Node's ``JSON.parse`` and
``jq`` refuse it)."""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every ``nan`` or infinity (an undefined score) as ``None``, in
    nested dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def strict_json(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as strict JSON text (:func:`json_safe`), ending with a newline."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False) + "\n"
