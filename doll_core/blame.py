"""Which plugin raised an exception: so that a plugin failing mid-run is named, not buried
in a traceback.

The core checks what plugins *return* (:class:`~doll_core.errors.PluginError`); an
exception raised *inside* plugin code is found here by walking its traceback from the
innermost frame outwards to the first frame that runs plugin code: a method of an object
built by a plugin factory (a class registered as a plugin), or the factory function itself.
"""

from __future__ import annotations

import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from types import TracebackType

import torch

from doll_core.registry import PluginInfo, Registry


@dataclass(frozen=True)
class Blame:
    """The plugin whose code raised, and where the exception came from."""

    plugin: PluginInfo
    function: str
    where: str

    def describe(self, exc: BaseException) -> str:
        """``explainer 'x' (from distribution 'd') raised RuntimeError: ... in attribute
        (file.py:12)``."""
        info = self.plugin
        message = str(exc).splitlines()[0] if str(exc) else ""
        return (
            f"{info.kind.value} {info.name!r} (from distribution {info.distribution!r}) "
            f"raised {type(exc).__name__}{': ' + message if message else ''} "
            f"in {self.function} ({self.where})"
        )


def _frames(tb: TracebackType | None) -> list[TracebackType]:
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    return frames


def _folder_of(obj: object) -> str | None:
    try:
        return os.path.dirname(os.path.abspath(inspect.getfile(obj)))  # type: ignore[arg-type]
    except (TypeError, OSError):
        return None


def _innermost_own_frame_is_plugin_code(frames: list[TracebackType], registry: Registry) -> bool:
    """Whether the innermost frame of DoLL or plugin code (library and standard-library
    frames skipped) lies in a plugin's own folder rather than in ``doll_core``: an error
    that core code raised, or met in a library it called, is DoLL's, even when a plugin
    method is further out (explainers call the core engine, datasets the core readers)."""
    core = _folder_of(sys.modules["doll_core"])
    plugin_folders = {
        folder for info in registry.plugins() if (folder := _folder_of(info.factory)) is not None
    }
    for tb in reversed(frames):
        filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if core is not None and filename.startswith(core + os.sep):
            return False
        if any(filename.startswith(folder + os.sep) for folder in plugin_folders):
            return True
    return False


def plugin_behind(exc: BaseException, registry: Registry) -> Blame | None:
    """The plugin in whose code ``exc`` was raised, or ``None``: core or library code, or
    a lack of memory (no plugin's fault; its traceback is kept)."""
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return None
    if not _innermost_own_frame_is_plugin_code(_frames(exc.__traceback__), registry):
        return None
    plugins = registry.plugins()
    classes = [(info, info.factory) for info in plugins if isinstance(info.factory, type)]
    functions = {
        getattr(info.factory, "__code__", None): info
        for info in plugins
        if not isinstance(info.factory, type)
    }
    frames = _frames(exc.__traceback__)
    if not frames:
        return None
    innermost = traceback.extract_tb(frames[-1], limit=1)[0]
    where = f"{innermost.filename}:{innermost.lineno}"
    for tb in reversed(frames):
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if owner is not None:
            exact = [info for info, cls in classes if type(owner) is cls]
            related = exact or [info for info, cls in classes if isinstance(owner, cls)]
            if related:
                return Blame(related[0], frame.f_code.co_name, where)
        if frame.f_code in functions:
            return Blame(functions[frame.f_code], frame.f_code.co_name, where)
    return None
