"""Shape rules of the code base that review alone lets slip (issue 30): no function in
``doll_core`` or ``plugins`` longer than 80 lines (from its ``def`` to its last line, docstring
included); the core reads a plugin's optional members only through
:func:`doll_core.interfaces.optional_member` and its siblings, which refuse undeclared names;
no stage key is decided by a list of field names."""

from __future__ import annotations

import ast
from pathlib import Path

from doll_core.interfaces import OPTIONAL_FACTORY_MEMBERS, OPTIONAL_MEMBERS

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for folder in ("doll_core", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, "split these functions: " + ", ".join(long)


def test_optional_plugin_members_are_read_through_the_declaring_helper() -> None:
    """No ``getattr(x, "name")`` / ``hasattr(x, "name")`` in the core names an optional
    member that :mod:`doll_core.interfaces` declares (it would bypass the declaration)."""
    declared = {
        name
        for table in (*OPTIONAL_MEMBERS.values(), *OPTIONAL_FACTORY_MEMBERS.values())
        for name in table
    }
    found = []
    for path in sorted((ROOT / "doll_core").rglob("*.py")):
        if path.name == "interfaces.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in declared
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.args[1].value}")
    assert not found, "read these through doll_core.interfaces.optional_member: " + ", ".join(found)


def test_no_stage_key_is_decided_by_a_list_of_field_names() -> None:
    """Stage keys come from the fields' own declarations
    (:func:`doll_core.configuration.settings_key`): no ``model_dump(exclude=...)`` feeds a
    key in the runner, and the name lists of before are gone."""
    runner = (ROOT / "doll_core" / "experiment" / "runner.py").read_text()
    assert "exclude=" not in runner
    for path in sorted((ROOT / "doll_core").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name in ("NOT_IN_KEY", "HASHED_OPTIONS", "SPLIT_SOURCES", "result_settings"):
            assert name not in text, f"{path.relative_to(ROOT)} still has {name}"
