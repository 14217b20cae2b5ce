"""Paths inside DoLL's records, so that a run folder can be moved or copied.

A record (a stage's ``config.json``, ``init.json`` and ``test.json``, a label store's
``config.json``, a checkpoint's metadata, a training state, a run's ``results.json``) that
names a file inside the same *tree* as itself names it relative to the folder that holds
the record; a file outside every tree (a user's dataset, a checkpoint given on the command
line) is named by its absolute path. The trees are the folders a run moves as one: the run
folder, its stage folder (``--stages``), and an ablation's folder around its grid points;
``doll run`` and ``doll ablate`` declare them with :func:`relocatable_within`. Outside
them (``doll train``, ``doll labels generate`` ...) every recorded path is absolute.

Writers name a path with :func:`recorded_path`, record a configuration with
:func:`config_record` and pass a JSON payload built from absolute paths through
:func:`portable`; readers resolve a recorded path with :func:`located`, which reads
relative and absolute (older) records alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_TREES: ContextVar[tuple[str, ...]] = ContextVar("doll_record_trees", default=())


def _absolute(path: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip(os.sep) + os.sep)


@contextmanager
def relocatable_within(*trees: str | Path) -> Iterator[None]:
    """Within the block, records name files inside any of ``trees`` (and in the same tree
    as the record) by relative paths; the trees of an enclosing block stay declared."""
    token = _TREES.set(_TREES.get() + tuple(_absolute(t) for t in trees))
    try:
        yield
    finally:
        _TREES.reset(token)


def recorded_path(target: str | Path, holder: str | Path) -> str:
    """How a record in the folder ``holder`` names ``target``: relative to ``holder`` when
    both lie inside one declared tree, else absolute."""
    path, folder = _absolute(target), _absolute(holder)
    if any(_inside(path, tree) and _inside(folder, tree) for tree in _TREES.get()):
        return os.path.relpath(path, folder)
    return path


def portable(payload: Any, holder: str | Path) -> Any:
    """``payload`` (JSON-ready: dicts, lists, strings, numbers) with every absolute path
    inside a declared tree rewritten by :func:`recorded_path` for a record in ``holder``.

    Only strings that are absolute paths inside a declared tree change, so no other value
    is mistaken for a path (relative strings are left alone: give such payloads absolute
    paths)."""
    trees = _TREES.get()
    if not trees:
        return payload
    if isinstance(payload, dict):
        return {key: portable(value, holder) for key, value in payload.items()}
    if isinstance(payload, list | tuple):
        return [portable(value, holder) for value in payload]
    if isinstance(payload, str) and os.path.isabs(payload):
        normal = os.path.normpath(payload)
        if any(_inside(normal, tree) for tree in trees):
            return recorded_path(normal, holder)
    return payload


def located(recorded: str | Path, holder: str | Path) -> Path:
    """The file a record in the folder ``holder`` names as ``recorded``: an absolute path
    as it is, a relative one below ``holder`` (normalised, so ``..`` steps are gone)."""
    path = Path(os.path.expanduser(os.fspath(recorded)))
    if path.is_absolute():
        return path
    return Path(os.path.normpath(Path(holder) / path))


def _path_fields(config: BaseModel) -> dict[str, Path | list[Path]]:
    """The fields of ``config`` that hold a path or a sequence of paths."""
    fields: dict[str, Path | list[Path]] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, Path):
            fields[name] = value
        elif isinstance(value, tuple | list) and value and all(isinstance(v, Path) for v in value):
            fields[name] = list(value)
    return fields


def config_record(config: BaseModel, holder: str | Path, **dump: Any) -> dict[str, Any]:
    """``config`` as JSON (``model_dump(mode="json", **dump)``) for a record in ``holder``,
    each path field named by :func:`recorded_path`."""
    payload = config.model_dump(mode="json", **dump)
    for name, value in _path_fields(config).items():
        if name in payload:
            payload[name] = (
                [recorded_path(v, holder) for v in value]
                if isinstance(value, list)
                else recorded_path(value, holder)
            )
    return payload


def same_record(
    saved: dict[str, Any], current: dict[str, Any], config: BaseModel, holder: str | Path
) -> dict[str, Any]:
    """``saved`` with each of ``config``'s path fields that names the same file as in
    ``current`` (relative or absolute, both read from ``holder``) replaced by ``current``'s
    value: what to compare with ``current`` to tell a changed setting from a moved folder
    or a record written before paths were relative."""
    merged = dict(saved)
    for name in _path_fields(config):
        old, new = saved.get(name), current.get(name)
        if old is None or new is None:
            continue
        olds, news = (old, new) if isinstance(new, list) else ([old], [new])
        if (
            isinstance(olds, list)
            and len(olds) == len(news)
            and all(
                located(a, holder) == located(b, holder) for a, b in zip(olds, news, strict=True)
            )
        ):
            merged[name] = new
    return merged
