"""Config validation with pydantic, reported as one clear user error.

Settings models check plugin names (and a plugin's parameters) when a registry is in the
validation context (``model_validate(values, context={"registry": registry})``, as
experiment validation does); their problems are raised with :func:`raise_problems`, so that
each is named by its own key.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from doll_core.errors import DollError

if TYPE_CHECKING:
    from doll_core.registry import Registry

ModelT = TypeVar("ModelT", bound=BaseModel)

#: ``(dotted key relative to the model, message)`` pairs
Problems = list[tuple[str, str]]

#: the pydantic error type that carries :data:`Problems`
_PROBLEMS = "doll_problems"


def takes_numbers_not_flags(annotation: Any) -> bool:
    """Whether a field of type ``annotation`` takes an int or float but not a bool."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        return bool not in members and any(takes_numbers_not_flags(m) for m in members)
    if origin is typing.Annotated:
        return takes_numbers_not_flags(typing.get_args(annotation)[0])
    return False


class Settings(BaseModel):
    """The base of every settings model: unknown keys refused, values frozen, and ``true``
    or ``false`` refused where a number is expected (pydantic would read ``epochs = true``
    as 1 epoch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and takes_numbers_not_flags(field.annotation):
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def default_of(model: type[BaseModel], name: str) -> Any:
    """The default of ``model``'s field ``name``: what a CLI option that sets the field
    shows and uses, so the default is stated once, in the field."""
    field = model.model_fields[name]
    return field.get_default(call_default_factory=True)


def raise_problems(problems: Problems) -> None:
    """Raise ``problems`` (if any) from a validator, each to be reported under its key."""
    if problems:
        message = "; ".join(f"{key}: {text}" if key else text for key, text in problems)
        raise PydanticCustomError(
            _PROBLEMS, "{summary}", {"summary": message, "problems": problems}
        )


def error_items(error: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """``(location, message)`` of every problem; an unknown key says so plainly."""
    items: list[tuple[tuple[Any, ...], str]] = []
    for item in error.errors():
        if item["type"] == _PROBLEMS:
            for key, text in item["ctx"]["problems"]:
                items.append(((*item["loc"], *(key.split(".") if key else ())), text))
        else:
            unknown = item["type"] in ("extra_forbidden", "unexpected_keyword_argument")
            message = "unknown key" if unknown else item["msg"]
            if item["type"] == "value_error":  # our validators' own words, without pydantic's
                message = str(item["ctx"]["error"])  # "Value error, " before them
            items.append((tuple(item["loc"]), message))
    return items


def validation_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One ``dotted.key: message`` per problem, each key under ``prefix`` (if given)."""
    problems = []
    for location, message in error_items(error):
        dotted = ".".join(str(part) for part in (prefix, *location) if part != "")
        problems.append(f"{dotted or '(top level)'}: {message}")
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


def context_registry(info: ValidationInfo) -> Registry | None:
    """The registry that plugin names are checked against (``None``: not checked)."""
    return (info.context or {}).get("registry")


def plugin_problems(
    registry: Registry | None,
    kind: str,
    name: str,
    name_key: str,
    params: Mapping[str, Any] | None = None,
    tables: str | Callable[[str], str] = "",
) -> Problems:
    """Is ``name`` a plugin of ``kind`` (else the problem is under ``name_key``); with
    ``params``, does it take them (the registry's
    :meth:`~doll_core.registry.Registry.parameter_problems`, each under the table
    ``tables(key)`` the user wrote it in; then the plugin is created, which for explainers,
    fusions and heads is cheap, and a refusal is put under ``tables`` or ``name_key``)?"""
    if registry is None:
        return []
    try:
        registry.get(kind, name)
    except DollError as exc:
        return [(name_key, str(exc))]
    if params is None:
        return []
    table = tables if callable(tables) else (lambda _key: tables)
    found = [
        (f"{table(key.split('.')[0])}.{key}".lstrip("."), text)
        for key, text in registry.parameter_problems(kind, name, params)
    ]
    if found:
        return found
    try:
        registry.create(kind, name, **params)
    except DollError as exc:
        return [(tables if isinstance(tables, str) and tables and params else name_key, str(exc))]
    return []
