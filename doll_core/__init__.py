"""DoLL: diagnosis-oriented localization labels.

Turns the explanations of chest X-ray classifiers into pixel-level pseudo labels,
pre-trains whole segmentation models on them and fine-tunes those on small tasks.
Importing this package is cheap; torch loads only when a function needs it.
"""

from __future__ import annotations

from doll_core._version import __version__
from doll_core.errors import DollError, PluginError, UnknownPluginError
from doll_core.hookspecs import hookimpl, hookspec
from doll_core.interfaces import PluginKind
from doll_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from doll_core.registry import Registry, get_registry


def __getattr__(name: str) -> object:
    # ``doll_core.explain`` imports torch: load it on first use, keep ``import doll_core`` cheap
    if name == "explain":
        from doll_core.attribution.api import explain

        return explain
    raise AttributeError(f"module 'doll_core' has no attribute {name!r}")


__all__ = [
    "NUM_OBSERVATIONS",
    "OBSERVATIONS",
    "DollError",
    "PluginError",
    "PluginKind",
    "Registry",
    "UnknownPluginError",
    "__version__",
    "explain",
    "get_registry",
    "hookimpl",
    "hookspec",
]
