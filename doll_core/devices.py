"""Which device names DoLL takes: checked where they are written (a configuration key, a
``--device`` option), so that a bad one is one clear message before any work."""

from __future__ import annotations

import torch

from doll_core.errors import DollError

#: The device types DoLL runs on (``auto`` picks CUDA when available, else the CPU).
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def check_device(name: object) -> str:
    """``name`` if DoLL can run on it: ``auto`` or a device of :data:`DEVICE_TYPES`
    (with an index or not), as ``torch.device`` parses it.

    :raises DollError: naming the value and the choices.
    """
    if isinstance(name, str) and name == "auto":
        return name
    problem = f"unknown device {name!r}; use {DEVICE_HELP}"
    if not isinstance(name, str):
        raise DollError(problem)
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DollError(problem) from None
    if device.type not in DEVICE_TYPES:
        raise DollError(problem)
    return name


def device_field(name: object) -> str:
    """:func:`check_device` for a pydantic field validator (its error is a ``ValueError``,
    which pydantic reports under the field's key)."""
    try:
        return check_device(name)
    except DollError as exc:
        raise ValueError(str(exc)) from None


def device_option(name: str | None) -> str | None:
    """:func:`check_device` for a ``--device`` option (``None``: not given); its
    :class:`DollError` is the CLI's one line and exit code 2."""
    return None if name is None else check_device(f"{name}")
