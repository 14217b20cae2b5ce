"""Dotted-path overrides of an experiment: ``--set finetune.seeds=[0,1]`` and
``--vary explanation.explainer=gradcam,saliency``."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from typing import Any

from doll_core.errors import DollError


def parse_value(raw: str) -> Any:
    """A TOML value (``3``, ``0.5``, ``true``, ``[8, "all"]``, ``{sigma = 1}``, ``"x"``);
    anything that is not TOML is taken as a bare string (``gradcam``)."""
    text = raw.strip()
    try:
        document = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # "1\nlr = 5" is TOML for two keys; one value was asked for, so it is a bare string
    return document["value"] if len(document) == 1 else text


def split_assignment(item: str, option: str = "--set") -> tuple[str, str]:
    """``"a.b=VALUE"`` -> ``("a.b", "VALUE")``; a clear error for anything else."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise DollError(f"{option} takes KEY=VALUE with a dotted KEY (a.b.c), got {item!r}")
    return key, raw


def set_dotted(document: dict[str, Any], key: str, value: Any) -> None:
    """Set ``document[a][b][c] = value`` for ``key`` ``"a.b.c"``, creating missing tables.

    :raises DollError: when a part of the path is a value, not a table.
    """
    parts = key.split(".")
    node = document
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise DollError(f"cannot set {key}: {where} is a value ({child!r}), not a table")
        node = child
    node[parts[-1]] = value


def apply_overrides(document: Mapping[str, Any], items: list[str]) -> dict[str, Any]:
    """A deep copy of ``document`` with every ``KEY=VALUE`` of ``items`` applied in order."""
    result = copy.deepcopy(dict(document))
    for item in items:
        key, raw = split_assignment(item)
        set_dotted(result, key, parse_value(raw))
    return result


def parse_vary(item: str) -> tuple[str, list[Any]]:
    """``"KEY=V1,V2"`` -> ``(KEY, [V1, V2])``. Values split on top-level commas, so
    ``budgets=[8,32],[8]`` gives two lists."""
    key, raw = split_assignment(item, option="--vary")
    values, depth, current = [], 0, ""
    for char in raw:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    if any(not value.strip() for value in values):
        raise DollError(f"--vary {key}: empty value in {raw!r}")
    parsed = [parse_value(value) for value in values]
    if len(parsed) < 2:
        raise DollError(f"--vary {key} needs at least two values, got {raw!r}")
    return key, parsed
