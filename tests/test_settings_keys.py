"""How settings enter stage keys, as their fields declare (:func:`settings_key`), and
every settings field's help text.

The keys of the shipped experiments are held bit for bit by
``tests/test_stage_keys_golden.py``; these tests hold each rule on small models.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

import pytest
from pydantic import BaseModel, Field

import doll_core
import doll_plugins
from doll_core.attribution.engine import EngineOptions
from doll_core.configuration import (
    KEY_WHEN_CHANGED,
    NEVER_IN_KEY,
    Settings,
    declared_fields,
    in_key,
    never_keyed_names,
    settings_key,
)


class Inner(Settings):
    size: int = Field(3, description="a size")
    workers: int = Field(1, description="processes", json_schema_extra=NEVER_IN_KEY)


class Outer(Settings):
    name: str = Field("a", description="a name")
    device: str = Field("cpu", description="where", json_schema_extra=NEVER_IN_KEY)
    added_later: float = Field(1.0, description="new", json_schema_extra=KEY_WHEN_CHANGED)
    params: dict[str, Any] = Field(default_factory=dict, description="parameters")
    extra: Inner = Field(
        default_factory=Inner,
        description="merged",
        json_schema_extra=in_key(merged_into="params"),
    )
    inner: Inner = Field(default_factory=Inner, description="nested")
    for_one_stage: int = Field(0, description="one", json_schema_extra=in_key(only=["b"]))


def test_each_declaration_is_followed() -> None:
    assert settings_key(Outer(), "a") == {
        "name": "a",
        "params": {"size": 3},  # extra's entries merged in, its own never-field left out
        "inner": {"size": 3},
    }
    changed = Outer(added_later=2.0, device="cuda", params={"k": 1}, inner=Inner(workers=5))
    assert settings_key(changed, "a") == {
        "name": "a",
        "added_later": 2.0,
        "params": {"k": 1, "size": 3},
        "inner": {"size": 3},
    }
    assert settings_key(Outer(), "b")["for_one_stage"] == 0


def test_a_section_gives_only_its_own_fields() -> None:
    class Section(Settings):
        name: str = Field("a", description="a name")

    assert settings_key(Outer(name="z"), "a", of=Section) == {"name": "z"}


def test_engine_options_enter_only_where_they_move_the_maps() -> None:
    changed = EngineOptions(max_rows=8, compile=True, channels_last=True, autocast="bf16")
    assert settings_key(changed, "labels") == {"max_rows": 8, "autocast": "bf16"}
    assert settings_key(EngineOptions(), "labels") == {}
    fields = declared_fields(EngineOptions)
    assert set(fields) == {f.name for f in dataclasses.fields(EngineOptions)}
    assert all(field.description for field in fields.values())


def test_doctor_leaves_out_what_never_enters_a_key() -> None:
    names = never_keyed_names()
    assert {"device", "num_workers", "workers", "image_cache", "compile"} <= names
    assert "epochs" not in names and "explainer" not in names


def settings_classes() -> list[type[BaseModel]]:
    """Every settings model of DoLL and its built-in plugins."""
    for package in (doll_core, doll_plugins):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)

    def below(cls: type[BaseModel]) -> list[type[BaseModel]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *below(sub))]

    return sorted(
        {c for c in below(Settings) if c.__module__.startswith(("doll_core", "doll_plugins"))},
        key=lambda c: f"{c.__module__}.{c.__qualname__}",
    )


@pytest.mark.parametrize("model", settings_classes(), ids=lambda c: c.__qualname__)
def test_every_settings_field_has_help(model: type[BaseModel]) -> None:
    lacking = [name for name, field in model.model_fields.items() if not field.description]
    assert not lacking, f"{model.__qualname__}: fields without a description: {lacking}"
