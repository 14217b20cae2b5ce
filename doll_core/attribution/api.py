"""``doll_core.explain``: raw attribution maps from any explainer plugin, checked."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from doll_core.attribution.engine import EngineOptions
from doll_core.configuration import describe_validation_error
from doll_core.errors import DollError, PluginError
from doll_core.registry import Registry, get_registry


def check_attributions(
    maps: Any, images: torch.Tensor, targets: torch.Tensor, explainer: str
) -> tuple[torch.Tensor, int]:
    """Check an explainer's result against the protocol and clean it.

    Shape ``[B, T, H, W]``, float32, on the images' device, all zeros where the target is
    -1: anything else is a :class:`PluginError` that names the explainer. A map holding
    NaN or Inf is zeroed whole and counted (it never reaches a label).

    :returns: the maps and the number of maps that were zeroed for NaN/Inf.
    """
    expected = (targets.shape[0], targets.shape[1], *images.shape[-2:])
    if not isinstance(maps, torch.Tensor):
        raise PluginError(f"explainer {explainer!r} returned a {type(maps).__name__}, not a tensor")
    if tuple(maps.shape) != expected:
        raise PluginError(
            f"explainer {explainer!r} returned shape {list(maps.shape)}; the protocol asks "
            f"for [B, T, H, W] = {list(expected)}"
        )
    if maps.dtype != torch.float32:
        raise PluginError(f"explainer {explainer!r} returned {maps.dtype}, not torch.float32")
    if maps.device != images.device:
        raise PluginError(
            f"explainer {explainer!r} returned maps on {maps.device}, images are on {images.device}"
        )
    finite = torch.isfinite(maps).flatten(2).all(dim=2)  # [B, T]
    bad = int((~finite).sum())
    if bad:
        maps = torch.where(finite[:, :, None, None], maps, torch.zeros_like(maps))
    empty = targets < 0
    if bool((maps[empty] != 0).any()):
        raise PluginError(
            f"explainer {explainer!r} returned non-zero maps for target -1 (no target); "
            "those maps must be all zeros"
        )
    return maps, bad


#: The explainer used when none is named (``doll_core.explain``, label generation).
DEFAULT_EXPLAINER = "integrated_gradients"
#: The names of the engine's execution options (the fields of :class:`EngineOptions`).
ENGINE_KEYS = frozenset(field.name for field in dataclasses.fields(EngineOptions))


def split_engine_options(
    params: Mapping[str, Any], where: str, new_place: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(explainer parameters, engine options)`` of a parameter table written before the
    engine options had a place of their own; each engine option found there is named in a
    :class:`FutureWarning` that says where it goes now (``new_place``). Deprecated: such
    tables keep working until DoLL 0.3."""
    moved = {key: value for key, value in params.items() if key in ENGINE_KEYS}
    if moved:
        warnings.warn(
            f"{where}: {', '.join(sorted(moved))}: engine options belong in {new_place}, "
            "not among an explainer's parameters (the old place works until DoLL 0.3)",
            FutureWarning,
            stacklevel=3,
        )
    return {k: v for k, v in params.items() if k not in ENGINE_KEYS}, moved


def with_engine_options(values: dict[str, Any], moved: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a label-generation table) with the engine options ``moved`` from an old
    place merged into its ``engine`` table, over what that table says (a ``--set`` in the
    old place is meant to win); an ``engine`` that is not a table is left for pydantic to
    refuse."""
    if not moved:
        return values
    own = values.get("engine")
    if isinstance(own, EngineOptions):
        own = own.changed()
    if own is not None and not isinstance(own, Mapping):
        return values
    return {**values, "engine": {**(own or {}), **moved}}


def takes_engine(name: Any, registry: Registry | None = None) -> bool:
    """Does explainer ``name``'s factory take an ``engine`` keyword (``False`` for a name
    that is not an explainer: its own check says so)?"""
    registry = registry or get_registry()
    if not isinstance(name, str) or name not in registry.names("explainer"):
        return False
    try:
        return "engine" in inspect.signature(registry.get("explainer", name).factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def engine_options(values: Mapping[str, Any], source: str) -> EngineOptions:
    """:class:`EngineOptions` from ``values`` (a table a user wrote), checked by pydantic.

    :raises DollError: naming every bad key under ``source``.
    """
    try:
        return TypeAdapter(EngineOptions).validate_python(dict(values))
    except ValidationError as exc:
        raise DollError(describe_validation_error(exc, source)) from None


def create_explainer(
    name: str,
    params: Mapping[str, Any] | None = None,
    engine: EngineOptions | None = None,
    *,
    registry: Registry | None = None,
) -> Any:
    """Explainer plugin ``name`` built with ``params``, and with ``engine`` when its
    factory takes an ``engine`` keyword (the engine explainers, Grad-CAM, Occlusion); an
    explainer that takes none ignores the options, with a warning if any was set.

    :param engine: execution options (default: ``EngineOptions()``).
    """
    registry = registry or get_registry()
    registry.get("explainer", name)  # an unknown name: the registry's message
    values = dict(params or {})
    if "engine" in values:
        raise DollError(
            f"explainer {name!r}: engine options are not a parameter; pass engine= (in an "
            "experiment, [explanation.engine])"
        )
    if takes_engine(name, registry):
        values["engine"] = engine or EngineOptions()
    elif engine is not None and engine.changed():
        warnings.warn(
            f"explainer {name!r} takes no engine options; ignored: {engine.changed()}",
            RuntimeWarning,
            stacklevel=2,
        )
    return registry.create("explainer", name, **values)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    explainer: str = DEFAULT_EXPLAINER,
    *,
    engine: EngineOptions | None = None,
    registry: Registry | None = None,
    **params: Any,
) -> torch.Tensor:
    """Raw attribution maps of ``model`` for every target of every image.

    :param model: a classifier, images -> logits ``[B, num_classes]`` (put in eval mode
        while explaining).
    :param images: float ``[B, C, H, W]``.
    :param targets: long ``[B, T]`` observation indices, ``-1`` = no target.
    :param explainer: an explainer plugin name (``doll plugins list --kind explainer``).
    :param engine: the engine's execution options (:class:`EngineOptions`: rows per pass,
        autocast, compile, ...); default: ``EngineOptions()``. Engine options among
        ``params`` still work, with a :class:`FutureWarning`, until DoLL 0.3.
    :param params: the explainer's parameters, e.g. ``n_steps=32``.
    :returns: float32 ``[B, T, H, W]``: raw attributions summed over input channels, no
        post-processing; maps with NaN/Inf are zeroed (with a warning).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise DollError("images must be a float tensor [B, C, H, W]")
    if (
        not isinstance(targets, torch.Tensor)
        or targets.dim() != 2
        or targets.dtype != torch.long
        or targets.shape[0] != images.shape[0]
    ):
        raise DollError(
            f"targets must be a long tensor [B, T] with B = {images.shape[0]} (-1 = no target)"
        )
    if bool((targets < -1).any()):
        raise DollError("targets hold values below -1; use -1 for 'no target'")
    params, moved = split_engine_options(params, "doll_core.explain", "engine=EngineOptions(...)")
    if moved:
        engine = dataclasses.replace(engine or EngineOptions(), **moved)
    plugin = create_explainer(explainer, params, engine, registry=registry)
    maps, bad = check_attributions(
        plugin.attribute(model, images, targets.to(images.device)),
        images,
        targets.to(images.device),
        explainer,
    )
    if bad:
        warnings.warn(
            f"explainer {explainer!r}: {bad} map(s) held NaN/Inf and were zeroed",
            RuntimeWarning,
            stacklevel=2,
        )
    return maps


def relative_errors(value: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """How far attribution maps are from a reference (same shape), in float64:
    ``max_abs`` = ``max |value - reference| / max |reference|`` (the project's attribution
    error) and ``l2`` = ``||value - reference|| / ||reference||``; each 0.0 when the
    reference is all zero."""
    difference = value.double() - reference.double()
    scale = float(reference.double().abs().max()) if reference.numel() else 0.0
    norm = float(reference.double().norm())
    return {
        "max_abs": float(difference.abs().max()) / scale if scale > 0 else 0.0,
        "l2": float(difference.norm()) / norm if norm > 0 else 0.0,
    }
