"""Hook specifications: the five ways a plugin extends DoLL.

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

    :param register: ``register(name, factory, **metadata)``.

    ``factory(**params)`` returns a :class:`doll_core.interfaces.Backbone`: an object with
    ``build(num_classes, in_channels) -> torch.nn.Module`` (a classifier mapping images
    ``[B, in_channels, H, W]`` to logits ``[B, num_classes]``) and ``cam_layer``, the dotted
    name of the module inside the built model that CAM-type explainers (Grad-CAM) hook.
    A backbone whose trained weights fit a segmentation encoder also sets ``encoder_name``
    (the seg-head encoder name) and implements ``encoder_state_dict(model)``.

    Example::

        @hookimpl
        def doll_register_backbones(register):
            register("resnet18", ResNet18)
    """


@hookspec
def doll_register_explainers(register: RegisterCallback) -> None:
    """Register attribution methods.

    :param register: ``register(name, factory, **metadata)``.

    ``factory(**params)`` returns a :class:`doll_core.interfaces.Explainer`: an object with
    ``attribute(model, images, targets) -> Tensor[B, T, H, W]`` (float32, on the images'
    device), where ``images`` is ``[B, C, H, W]`` and ``targets`` is ``LongTensor[B, T]`` of
    observation indices, ``-1`` meaning "no target here" (that map must be all zeros). The
    map is the raw attribution summed over input channels; post-processing is the core's
    job, not the explainer's.

    Example::

        @hookimpl
        def doll_register_explainers(register):
            register("gradient_sign", GradientSign)
    """


@hookspec
def doll_register_fusions(register: RegisterCallback) -> None:
    """Register ways to merge the maps of several classifiers.

    :param register: ``register(name, factory, **metadata)``.

    ``factory(**params)`` returns a :class:`doll_core.interfaces.Fusion`: an object with
    ``fuse(maps, weights) -> Tensor[B, T, H, W]`` where ``maps`` is
    ``Tensor[N_clf, B, T, H, W]`` and ``weights`` is ``Tensor[N_clf]`` or ``None``.

    Example::

        @hookimpl
        def doll_register_fusions(register):
            register("mean", MeanFusion)
    """


@hookspec
def doll_register_seg_heads(register: RegisterCallback) -> None:
    """Register segmentation architectures (encoder and decoder/head, trained end to end).

    :param register: ``register(name, factory, **metadata)``.

    ``factory(**params)`` returns a :class:`doll_core.interfaces.SegHead`: an object with
    ``build(encoder, classes, in_channels) -> torch.nn.Module`` mapping
    ``[B, in_channels, H, W]`` to logits ``[B, classes, H, W]``. The built model exposes its
    encoder as the attribute ``encoder`` so that a classifier's weights can be loaded into it.

    Example::

        @hookimpl
        def doll_register_seg_heads(register):
            register("unet", Unet)
    """


@hookspec
def doll_register_datasets(register: RegisterCallback) -> None:
    """Register readers of on-disk data layouts.

    :param register: ``register(name, factory, **metadata)``.

    ``factory(root, **options)`` returns a :class:`doll_core.interfaces.DatasetReader`: a
    sized, indexable map-style dataset (``len(ds)``, ``ds[i]``) over the layout at ``root``.

    Example::

        @hookimpl
        def doll_register_datasets(register):
            register("segfolder", SegFolder)
    """
