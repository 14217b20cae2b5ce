"""Config validation with pydantic, reported as one clear user error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from doll_core.errors import DollError

ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, ``source: dotted.key: message``, joined by '; '."""
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{location}: {message}")
    return f"{source}: " + "; ".join(problems)


def parse_config(model: type[ModelT], data: Mapping[str, Any], source: str = "config") -> ModelT:
    """Validate ``data`` against ``model``; a :class:`DollError` names every bad key."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise DollError(describe_validation_error(exc, source)) from None
