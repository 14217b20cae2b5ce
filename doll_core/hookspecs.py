"""Hook specifications: the six ways a plugin extends DoLL.

A plugin is a module (or any object) with functions marked ``@doll_core.hookimpl`` and
named after the hooks below. A distribution makes it discoverable with one entry point in
the group ``doll``::

    [project.entry-points.doll]
    my_plugin = "my_package.my_module"

Each hook is called once per plugin when the registry is built, with a single argument,
``register``, a callback of signature::

    register(name: str, factory: Callable[..., T], **metadata) -> None

``name`` is what users write in configs and on the command line (letters, digits, ``_``,
``-`` and ``.``; it must be unique within its kind). ``factory(**params)`` builds the
plugin object from user parameters; it is usually a class. ``metadata`` is free-form and
shown by ``doll plugins list --json``; the key ``description`` overrides the one-line
description that is otherwise taken from the factory's docstring.

What the object a factory returns must provide, tensor shapes included, is stated once,
in :mod:`doll_core.interfaces` (one protocol per kind); the registry checks its required
members (:data:`doll_core.interfaces.REQUIRED_MEMBERS`) when it builds one.

Hooks return nothing. A hook that raises, or registers something invalid, is reported with
its plugin's entry point and distribution; every other plugin still loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

PROJECT_NAME = "doll"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterCallback(Protocol):
    """The ``register`` argument that every hook receives."""

    def __call__(self, name: str, factory: Callable[..., Any], **metadata: Any) -> None: ...


@hookspec
def doll_register_backbones(register: RegisterCallback) -> None:
    """Register classifier architectures.

    :param register: ``register(name, factory, **metadata)``; ``factory(**params)``
        returns a :class:`doll_core.interfaces.Backbone` (``build``, ``cam_layer`` and,
        for weights that fit a segmentation encoder, the optional ``encoder_name`` and
        ``encoder_state_dict``; shapes, duties and every optional member, with its
        default, are stated there). Nothing is read from ``metadata``.

    Example::

        @hookimpl
        def doll_register_backbones(register):
            register("resnet18", ResNet18)
    """


@hookspec
def doll_register_explainers(register: RegisterCallback) -> None:
    """Register attribution methods.

    :param register: ``register(name, factory, **metadata)``; ``factory(**params)``
        returns a :class:`doll_core.interfaces.Explainer` (``attribute``; shapes and
        duties are stated there). ``params`` are what change the maps; a factory that
        also declares a keyword ``engine`` gets the engine's execution options there
        (:class:`doll_core.attribution.engine.EngineOptions`).

    Example::

        @hookimpl
        def doll_register_explainers(register):
            register("gradient_sign", GradientSign)
    """


@hookspec
def doll_register_fusions(register: RegisterCallback) -> None:
    """Register ways to merge the maps of several classifiers.

    :param register: ``register(name, factory, **metadata)``; ``factory(**params)``
        returns a :class:`doll_core.interfaces.Fusion` (``fuse``, which gets one weight
        per classifier *and map*; shapes and duties are stated there).

    Example::

        @hookimpl
        def doll_register_fusions(register):
            register("mean", MeanFusion)
    """


@hookspec
def doll_register_seg_heads(register: RegisterCallback) -> None:
    """Register segmentation architectures (encoder and decoder/head, trained end to end).

    :param register: ``register(name, factory, **metadata)``; ``factory(**params)``
        returns a :class:`doll_core.interfaces.SegHead` (``build``, and
        ``output_layer`` / ``set_output_layer`` through which fine-tuning finds and
        replaces the output layer; shapes and duties are stated there).

    Example::

        @hookimpl
        def doll_register_seg_heads(register):
            register("unet", Unet)
    """


@hookspec
def doll_register_datasets(register: RegisterCallback) -> None:
    """Register readers of on-disk data layouts.

    :param register: ``register(name, factory, **metadata)``; ``factory(root, **options)``
        returns a :class:`doll_core.interfaces.DatasetReader` (the samples it returns, its
        optional members and the keywords the core passes, ``split``, ``size``,
        ``grayscale`` and ``on_error``, are stated there). ``metadata``: ``task``
        (``"classification"`` or ``"segmentation"``) and ``splits`` (the split names
        ``doll data inspect`` counts; default: the whole set).

    Example::

        @hookimpl
        def doll_register_datasets(register):
            register("segfolder", SegFolder)
    """


@hookspec
def doll_register_metrics(register: RegisterCallback) -> None:
    """Register explanation-quality metrics (faithfulness, randomisation, complexity,
    localization), used by ``doll evaluate`` and by an experiment's ``[evaluation]``.

    :param register: ``register(name, factory, **metadata)``; ``factory(**params)``
        returns a :class:`doll_core.interfaces.Metric` (``category``,
        ``higher_is_better``, ``needs`` and ``compute`` over a batch of maps
        ``[B, T, H, W]``; shapes and duties are stated there).

    Example::

        @hookimpl
        def doll_register_metrics(register):
            register("sparseness", Sparseness)
    """
