"""The plugin registry: a pluggy ``PluginManager`` fed from the entry-point group ``doll``.

Built-in plugins and third-party plugins take the same road: a distribution declares an
entry point in the group ``doll`` that names a module; the registry imports the module,
registers it with pluggy and calls its ``doll_register_*`` hooks (see
:mod:`doll_core.hookspecs`), one plugin at a time, so that whatever goes wrong is pinned on
the plugin that did it while every other plugin still loads.

The environment variable ``DOLL_PLUGINS`` (comma-separated entry-point names, optionally
``distribution:name``) restricts loading to those entry points, to corner a broken plugin.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from types import MappingProxyType
from typing import Any

import pluggy
from pydantic import ConfigDict, ValidationError, create_model

from doll_core import hookspecs
from doll_core.configuration import takes_numbers_not_flags
from doll_core.errors import PluginError, UnknownPluginError
from doll_core.interfaces import PROTOCOLS, REQUIRED_MEMBERS, PluginKind

ENTRY_POINT_GROUP = "doll"
PLUGIN_FILTER_ENV = "DOLL_PLUGINS"
LOCAL_DISTRIBUTION = "<local>"
_OWN_DISTRIBUTION = "doll"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin module came from: the entry point and distribution that declared it."""

    entry_point: str
    distribution: str
    module: str

    @property
    def key(self) -> str:
        """Unique name of the module in the plugin manager: ``distribution:entry_point``."""
        return f"{self.distribution}:{self.entry_point}"

    def describe(self) -> str:
        """``plugin module 'm' (entry point 'e' of distribution 'd')``, for messages."""
        return (
            f"plugin module {self.module!r} (entry point {self.entry_point!r} "
            f"of distribution {self.distribution!r})"
        )


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin: a name of one kind, its factory and where it came from."""

    name: str
    kind: PluginKind
    factory: Callable[..., Any]
    source: PluginSource
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def distribution(self) -> str:
        return self.source.distribution

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``doll plugins list --json``)."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "distribution": self.source.distribution,
            "entry_point": self.source.entry_point,
            "module": self.source.module,
            "description": self.description,
            "metadata": {k: _jsonable(v) for k, v in self.metadata.items()},
        }


@dataclass(frozen=True)
class LoadFailure:
    """A plugin module, hook or registration that could not be loaded, and why."""

    source: PluginSource
    reason: str

    def __str__(self) -> str:
        return f"{self.source.describe()}: {self.reason}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _first_docstring_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def exception_summary(exc: BaseException) -> str:
    """``Type: first line of the message`` (or the type alone): an exception in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def plugin_filter_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The entry-point names in ``DOLL_PLUGINS``, or ``None`` (load all) when unset/empty."""
    raw = (os.environ if environ is None else environ).get(PLUGIN_FILTER_ENV, "")
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    return names or None


def _flag_mismatch(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is a flag where a number is meant, or not a flag where only a flag
    is (pydantic's lax mode reads ``True`` as 1 and ``"no"`` as a flag, and the factory
    then gets the unconverted value: ``bool("no")`` is true)."""
    if annotation is bool:
        return not isinstance(value, bool)
    return isinstance(value, bool) and takes_numbers_not_flags(annotation)


def _kind_of(annotation: Any) -> str:
    return "true or false" if annotation is bool else "a number"


class Registry:
    """All plugins of all kinds, with the failures met while loading them.

    Build one with :meth:`from_environment` (entry points, honouring ``DOLL_PLUGINS``), or
    start empty and call :meth:`load_entry_points` / :meth:`add_plugin`.
    """

    def __init__(self) -> None:
        self._manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._manager.add_hookspecs(hookspecs)
        self._plugins: dict[PluginKind, dict[str, PluginInfo]] = {k: {} for k in PluginKind}
        self.failures: list[LoadFailure] = []
        self.filtered_out: list[PluginSource] = []
        self.plugin_filter: frozenset[str] | None = None

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_environment(cls, group: str = ENTRY_POINT_GROUP) -> Registry:
        """A registry of every entry point in ``group``, restricted by ``DOLL_PLUGINS``."""
        registry = cls()
        registry.load_entry_points(group, only=plugin_filter_from_env())
        return registry

    def load_entry_points(
        self, group: str = ENTRY_POINT_GROUP, only: Collection[str] | None = None
    ) -> None:
        """Import and register every entry point of ``group`` (only those named in ``only``,
        by ``name`` or ``distribution:name``, when given). The ``doll`` distribution's own
        plugins load first, then the others sorted by distribution and name, so that the
        outcome does not depend on ``sys.path`` order."""
        self.plugin_filter = frozenset(only) if only is not None else None
        entry_points = sorted(
            importlib_metadata.entry_points(group=group),
            key=lambda ep: (
                _dist_name(ep) != _OWN_DISTRIBUTION,
                _dist_name(ep),
                ep.name,
            ),
        )
        matched: set[str] = set()
        for ep in entry_points:
            source = PluginSource(ep.name, _dist_name(ep), ep.value)
            if only is not None:
                hits = {ep.name, source.key} & set(only)
                if not hits:
                    self.filtered_out.append(source)
                    continue
                matched |= hits
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.failures.append(
                    LoadFailure(source, f"import failed: {exception_summary(exc)}")
                )
                continue
            self.add_plugin(module, source=source)
        for missing in sorted(set(only or ()) - matched):
            names = ", ".join(sorted({ep.name for ep in entry_points})) or "none"
            self.failures.append(
                LoadFailure(
                    PluginSource(missing, "?", "?"),
                    f"named in {PLUGIN_FILTER_ENV}, but no installed distribution declares "
                    f"that entry point (entry points in group {group!r}: {names})",
                )
            )

    def add_plugin(
        self,
        plugin: object,
        *,
        source: PluginSource | None = None,
        name: str | None = None,
    ) -> None:
        """Register an object with ``@hookimpl`` functions (usually a module) and collect
        what its hooks register. Without ``source`` it counts as a local plugin named
        ``name`` (default: the object's ``__name__``)."""
        if source is None:
            label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
            source = PluginSource(label, LOCAL_DISTRIBUTION, label)
        try:
            self._manager.register(plugin, name=source.key)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self.failures.append(LoadFailure(source, f"could not be registered: {exc}"))
            return
        hook_callers = self._manager.get_hookcallers(plugin) or []
        if not hook_callers:
            self.failures.append(
                LoadFailure(
                    source,
                    "defines no @doll_core.hookimpl function (did you forget the decorator?)",
                )
            )
            return
        known = {kind.hook_name: kind for kind in PluginKind}
        for caller in hook_callers:
            if caller.name not in known:
                close = difflib.get_close_matches(caller.name, list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.failures.append(
                    LoadFailure(source, f"defines {caller.name!r}, which is not a DoLL hook{hint}")
                )
        for kind in PluginKind:
            caller = getattr(self._manager.hook, kind.hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    self._call_register_hook(kind, impl.function, source)

    def _call_register_hook(
        self, kind: PluginKind, function: Callable[..., Any], source: PluginSource
    ) -> None:
        staged: dict[str, PluginInfo] = {}

        def register(name: Any, factory: Any, **meta: Any) -> None:
            problem = self._registration_problem(kind, name, factory, staged)
            if problem:
                self.failures.append(LoadFailure(source, problem))
                return
            description = str(meta.pop("description", "") or _first_docstring_line(factory))
            staged[name] = PluginInfo(
                name, kind, factory, source, description, MappingProxyType(dict(meta))
            )

        try:
            function(register=register)
        except Exception as exc:
            self.failures.append(
                LoadFailure(source, f"hook {kind.hook_name} raised {exception_summary(exc)}")
            )
            return
        self._plugins[kind].update(staged)

    def _registration_problem(
        self, kind: PluginKind, name: Any, factory: Any, staged: Mapping[str, PluginInfo]
    ) -> str | None:
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            return (
                f"registered the {kind.value} name {name!r}; names are non-empty strings of "
                "letters, digits, '_', '-' and '.'"
            )
        if not callable(factory):
            return (
                f"registered {kind.value} {name!r} with a factory of type "
                f"{type(factory).__name__}, which is not callable"
            )
        if name in staged:
            return f"registered {kind.value} {name!r} twice"
        existing = self._plugins[kind].get(name)
        if existing is not None:
            return (
                f"registered {kind.value} {name!r}, which {existing.source.describe()} already "
                "registered; the first registration is kept"
            )
        return None

    # ----------------------------------------------------------------------------- queries
    def plugins(self, kind: PluginKind | str | None = None) -> list[PluginInfo]:
        """Every plugin (of one kind), sorted by kind then name."""
        kinds = list(PluginKind) if kind is None else [self._kind(kind)]
        return [self._plugins[k][n] for k in kinds for n in sorted(self._plugins[k])]

    def names(self, kind: PluginKind | str) -> list[str]:
        """The registered names of one kind, sorted."""
        return sorted(self._plugins[self._kind(kind)])

    def get(self, kind: PluginKind | str, name: str) -> PluginInfo:
        """The plugin ``name`` of ``kind``; :class:`UnknownPluginError` lists the choices."""
        kind = self._kind(kind)
        try:
            return self._plugins[kind][name]
        except (KeyError, TypeError):
            raise UnknownPluginError(self._unknown_message(kind, name)) from None

    def parameter_problems(
        self, kind: PluginKind | str, name: str, params: Mapping[str, Any], *, types: bool = True
    ) -> list[tuple[str, str]]:
        """``(key, message)`` for each of ``params`` that plugin ``name`` cannot take, by
        the signature of its factory: a name it has no parameter for, or (with ``types``) a
        value that no annotated type can take (pydantic's lax mode). A factory without a
        signature, or whose annotations do not resolve, is left to its own checks.

        :raises UnknownPluginError: when ``name`` is not a plugin of ``kind``.
        """
        info = self.get(kind, name)
        plugin = f"{info.kind.value} {info.name!r}"
        try:
            parameters = inspect.signature(info.factory, eval_str=True).parameters
        except Exception:  # a builtin without a signature, or an unresolvable annotation
            return []
        takes = ", ".join(parameters) or "no parameters"
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        unknown = [
            (key, f"{plugin} has no parameter {key!r}; it takes: {takes}")
            for key in params
            if key not in parameters and not any_keyword
        ]
        if unknown or not types:
            return unknown
        fields: dict[str, Any] = {
            key: (parameter.annotation, ...)
            for key, parameter in parameters.items()
            if key in params and parameter.annotation is not inspect.Parameter.empty
        }
        if not fields:
            return []
        flags = [
            (
                key,
                f"{plugin} parameter {key!r} takes {_kind_of(fields[key][0])}, got {params[key]!r}",
            )
            for key in fields
            if _flag_mismatch(fields[key][0], params[key])
        ]
        if flags:
            return flags
        try:
            model = create_model(
                "PluginParameters", __config__=ConfigDict(arbitrary_types_allowed=True), **fields
            )
            model.model_validate({key: params[key] for key in fields})
        except ValidationError as exc:
            return [
                (
                    ".".join(str(part) for part in item["loc"]),
                    f"{plugin} {'.'.join(str(p) for p in item['loc'])!r}: {item['msg']}, "
                    f"got {item['input']!r}",
                )
                for item in exc.errors()
            ]
        except Exception:  # an annotation pydantic cannot check: leave it to the plugin
            return []
        return []

    def create(self, kind: PluginKind | str, name: str, /, **params: Any) -> Any:
        """Build plugin ``name`` of ``kind`` with ``factory(**params)`` and check that the
        result has the members its kind requires. Every failure names the plugin, and a
        parameter it cannot take names that parameter (:meth:`parameter_problems`)."""
        info = self.get(kind, name)
        label = f"{info.kind.value} {info.name!r} (from distribution {info.distribution!r})"
        problems = self.parameter_problems(kind, name, params)  # values: the plugin's own checks
        if problems:
            keys = sorted({key.split(".")[0] for key, _ in problems})
            raise PluginError(
                f"{label} does not accept parameters {keys}: "
                + "; ".join(message for _, message in problems)
            )
        try:
            instance = info.factory(**params)
        except Exception as exc:
            raise PluginError(f"{label} could not be built: {exception_summary(exc)}") from exc
        missing = [m for m in REQUIRED_MEMBERS[info.kind] if not hasattr(instance, m)]
        if missing:
            protocol = PROTOCOLS[info.kind]
            raise PluginError(
                f"{label} returned a {type(instance).__name__} without "
                f"{', '.join(repr(m) for m in missing)}, which every {info.kind.value} must "
                f"have (see {protocol.__module__}.{protocol.__name__})"
            )
        return instance

    def counts(self) -> dict[str, int]:
        """Number of plugins per kind."""
        return {kind.value: len(self._plugins[kind]) for kind in PluginKind}

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def _kind(kind: PluginKind | str) -> PluginKind:
        try:
            return PluginKind(kind)
        except ValueError:
            choices = ", ".join(k.value for k in PluginKind)
            raise UnknownPluginError(
                f"unknown plugin kind {kind!r}; kinds are: {choices}"
            ) from None

    def _unknown_message(self, kind: PluginKind, name: object) -> str:
        available = sorted(self._plugins[kind])
        message = f"unknown {kind.value} {name!r}"
        close = difflib.get_close_matches(str(name), available, n=1, cutoff=0.5)
        if close:
            message += f"; did you mean {close[0]!r}?"
        if available:
            message += f" Available {kind.value}s: {', '.join(available)}."
        else:
            message += f" No {kind.value} plugins are loaded."
        if self.plugin_filter is not None:
            message += (
                f" ({PLUGIN_FILTER_ENV}={','.join(sorted(self.plugin_filter))} restricts "
                "which plugins load.)"
            )
        if self.failures:
            message += (
                f" Note: {len(self.failures)} plugin problem(s) occurred while loading; "
                "run 'doll plugins list' to see them."
            )
        return message


def _dist_name(ep: importlib_metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None and dist.name else "?"


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built from entry points on first use."""
    global _default
    if _default is None:
        _default = Registry.from_environment()
    return _default


def reset_registry() -> None:
    """Forget the process-wide registry (the next :func:`get_registry` rebuilds it)."""
    global _default
    _default = None
