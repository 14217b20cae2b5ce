"""Exception types. Every :class:`DollError` is a *user* error: the CLI prints its message
on one line and exits with code 2 (a traceback only with ``--debug``)."""

from __future__ import annotations


class DollError(Exception):
    """Something the user can fix: a bad name, option, path, file or plugin."""


class GroundTruthError(DollError):
    """Ground truth that cannot be read or does not fit its image: it stops a scoring as
    a whole, never recorded as one explainer's refusal."""


class UnknownPluginError(DollError, LookupError):
    """A plugin name that no loaded plugin registered for that kind."""


class PluginError(DollError):
    """A plugin that failed to load, register, build or that returned an invalid result.

    The message always names the plugin (and, where known, its entry point and
    distribution), so that the user knows whom to blame.
    """
