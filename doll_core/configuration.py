"""Config validation with pydantic, reported as one clear user error, and how each
setting enters a stage key.

Settings models check plugin names (and a plugin's parameters) when a registry is in the
validation context (``model_validate(values, context={"registry": registry})``, as
experiment validation does); their problems are raised with :func:`raise_problems`, so that
each is named by its own key.

Every settings field declares, in its ``json_schema_extra``, how it enters the key of the
stages it configures (:func:`in_key`): ``always`` (the default), only when ``changed`` from
its default (a setting added after stages were written, so that theirs stay reusable), or
``never`` (what cannot change a result: device, worker counts; and the inputs a runner
fills in, whose identity enters the stage's inputs instead). :func:`settings_key` is the
one function that derives keys from these declarations.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, to_jsonable_python

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


#: How a field enters a stage key (see the module docstring).
KeyWhen = Literal["always", "changed", "never"]


def in_key(
    when: KeyWhen = "always",
    *,
    only: Iterable[str] | None = None,
    merged_into: str | None = None,
) -> dict[str, Any]:
    """The ``json_schema_extra`` of a field that enters stage keys as ``when`` says.

    Args:
        when (KeyWhen): ``"always"``, ``"changed"`` (only when it differs from its
            default) or ``"never"``. Default: ``"always"``.
        only (Iterable[str] | None): the key purposes (stage kinds, or ``"store"`` for a
            label store's content hash) it enters; ``None``: all. Default: ``None``.
        merged_into (str | None): a sibling field whose key entry (a mapping) takes this
            field's entries, where they are not empty (engine options listed among the
            explainer's parameters, as before they had a section). Default: ``None``.
    """
    extra: dict[str, Any] = {"stage_key": when}
    if only is not None:
        extra["stage_key_only"] = sorted(only)
    if merged_into is not None:
        extra["stage_key_merged_into"] = merged_into
    return extra


#: the declaration of a field that never enters a stage key
NEVER_IN_KEY = in_key("never")
#: the declaration of a field that enters stage keys only when changed from its default
KEY_WHEN_CHANGED = in_key("changed")


def declared_fields(model: type[Any]) -> dict[str, FieldInfo]:
    """The fields of a settings class: a pydantic model's, or a dataclass's (whose
    ``metadata`` holds a field's ``description`` and :func:`in_key` declaration, as
    :class:`~doll_core.attribution.engine.EngineOptions` has them); none for anything
    else."""
    found = getattr(model, "__pydantic_fields__", None)
    if found is not None:
        return dict(found)
    if not (isinstance(model, type) and dataclasses.is_dataclass(model)):
        return {}
    hints = typing.get_type_hints(model)
    return {
        field.name: FieldInfo(
            annotation=hints[field.name],
            default=field.default,
            description=field.metadata.get("description"),
            json_schema_extra={k: v for k, v in field.metadata.items() if k != "description"},
        )
        for field in dataclasses.fields(model)
    }


def key_declaration(field: FieldInfo) -> dict[str, Any]:
    """The field's :func:`in_key` declaration (``always`` where it declares none)."""
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) and "stage_key" in extra else in_key()


def settings_key(model: Any, purpose: str, *, of: type[Any] | None = None) -> dict[str, Any]:
    """The JSON-ready settings of ``model`` that enter the key of a ``purpose`` (a stage
    kind, or ``"store"``), as its fields declare (:func:`in_key`); nested settings models
    by their own fields' declarations.

    Args:
        model (BaseModel | dataclass): the settings (a dataclass declares its fields in
            their ``metadata``, see :func:`declared_fields`).
        purpose (str): the stage kind, or ``"store"``.
        of (type | None): only the fields this settings class declares (one section of
            ``model``'s, which must hold them). Default: ``None`` (all of ``model``'s).

    Returns:
        dict[str, Any]: field name -> JSON value, of the fields that enter the key.
    """
    fields = declared_fields(type(model))
    names = list(fields) if of is None else list(declared_fields(of))
    key: dict[str, Any] = {}
    merged: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        declared = key_declaration(fields[name])
        only = declared.get("stage_key_only")
        value = getattr(model, name)
        if declared["stage_key"] == "never" or (only is not None and purpose not in only):
            continue
        if declared["stage_key"] == "changed" and value == fields[name].get_default(
            call_default_factory=True
        ):
            continue
        nested = bool(declared_fields(type(value)))
        entry = settings_key(value, purpose) if nested else to_jsonable_python(value)
        target = declared.get("stage_key_merged_into")
        if target is None:
            key[name] = entry
        elif entry:
            merged.append((target, entry))
    for target, entry in merged:
        if target in key:
            key[target] = {**key[target], **entry}
    return key


def never_keyed_names() -> frozenset[str]:
    """The names of every settings field declared :data:`NEVER_IN_KEY` (what ``doll
    doctor`` leaves out when it compares a stage record of an older DoLL, which recorded
    them, with a planned stage's settings)."""

    def models(cls: type[BaseModel]) -> Iterable[type[BaseModel]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from models(sub)

    return frozenset(
        name
        for model in models(Settings)
        for name, field in model.model_fields.items()
        if key_declaration(field)["stage_key"] == "never"
    )


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
