"""Config validation with pydantic, reported as one clear user error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from doll_core.errors import DollError

ModelT = TypeVar("ModelT", bound=BaseModel)


def validation_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One ``dotted.key: message`` per problem, each key under ``prefix`` (if given)."""
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{location or '(top level)'}: {message}")
    return problems


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, ``source: dotted.key: message``, joined by '; '."""
    return f"{source}: " + "; ".join(validation_problems(error))


def parse_config(model: type[ModelT], data: Mapping[str, Any], source: str = "config") -> ModelT:
    """Validate ``data`` against ``model``; a :class:`DollError` names every bad key."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise DollError(describe_validation_error(exc, source)) from None
