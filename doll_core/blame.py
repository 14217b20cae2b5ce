"""Which plugin raised an exception: so that a plugin failing mid-run is named, not buried
in a traceback.

The core checks what plugins *return* (:class:`~doll_core.errors.PluginError`); an
exception raised *inside* plugin code is found here by walking its traceback from the
innermost frame outwards to the first frame that runs plugin code: a method of an object
built by a plugin factory (a class registered as a plugin), or the factory function itself.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from types import TracebackType

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


def plugin_behind(exc: BaseException, registry: Registry) -> Blame | None:
    """The plugin in whose code ``exc`` was raised, or ``None`` (core or library code)."""
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
