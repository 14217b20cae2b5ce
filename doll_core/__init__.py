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

__all__ = [
    "NUM_OBSERVATIONS",
    "OBSERVATIONS",
    "DollError",
    "PluginError",
    "PluginKind",
    "Registry",
    "UnknownPluginError",
    "__version__",
    "get_registry",
    "hookimpl",
    "hookspec",
]
