"""Typed interfaces of the six plugin kinds: the one place where the tensor shapes and
the duties of plugin objects are stated (the hooks in :mod:`doll_core.hookspecs` point
here).

These are :class:`typing.Protocol` classes: a plugin object conforms by having the named
methods and attributes, it does not need to inherit from anything. The registry checks
the required members (:data:`REQUIRED_MEMBERS`) of every object a factory returns; the
core checks what plugins return where it calls them.

Every member the core reads is declared here: required ones in the protocol and
:data:`REQUIRED_MEMBERS`, optional ones in :data:`OPTIONAL_MEMBERS` (members of the object)
and :data:`OPTIONAL_FACTORY_MEMBERS` (attributes of the factory), each with the default the
core uses when a plugin leaves it out. The core reads optional members only through
:func:`optional_member` and :func:`optional_factory_member`, which refuse a name that is not
declared, so that nothing the core relies on goes undocumented. The keywords the core
passes to a dataset factory are :data:`DATASET_FACTORY_KEYWORDS`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch
    from torch import nn


class PluginKind(StrEnum):
    """The kinds of plugin, as users write them (``doll plugins list --kind seg_head``)."""

    BACKBONE = "backbone"
    EXPLAINER = "explainer"
    FUSION = "fusion"
    SEG_HEAD = "seg_head"
    DATASET = "dataset"
    METRIC = "metric"

    @property
    def hook_name(self) -> str:
        """The hook that registers plugins of this kind, e.g. ``doll_register_backbones``."""
        return f"doll_register_{self.value}s"


@runtime_checkable
class Backbone(Protocol):
    """A classifier architecture (registered by
    :func:`doll_core.hookspecs.doll_register_backbones`).

    ``cam_layer`` is the dotted module name, inside the model that :meth:`build` returns,
    whose output CAM-type explainers (Grad-CAM) use: the last convolutional feature map.

    Optional (:data:`OPTIONAL_MEMBERS`): ``encoder_name`` is the seg-head encoder whose
    parameters have the same names and shapes as this backbone's feature extractor
    (default ``None``: there is none, and its weights cannot start a segmentation model);
    a backbone that sets it also implements :meth:`encoder_state_dict`. ``unavailable``
    names the observations (of :data:`doll_core.observations.OBSERVATIONS`) the model has
    no output for (default ``()``; a torchxrayvision model lacks some), which are never
    trained, explained or scored.

    Optional on the factory (:data:`OPTIONAL_FACTORY_MEMBERS`): ``input_mean`` and
    ``input_std``, the normalisation its weights expect (default ``None``: the settings'
    ``mean``/``std``); a classifier's settings then take them, and refuse other values.
    """

    cam_layer: str

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        """Return a classifier: images ``[B, in_channels, H, W]`` -> logits ``[B, num_classes]``."""
        ...

    def encoder_state_dict(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        """The parameters and buffers of ``model`` that a seg encoder named
        ``encoder_name`` takes, keyed by that encoder's own names (the classifier head
        left out)."""
        ...


@runtime_checkable
class Explainer(Protocol):
    """An attribution method (registered by
    :func:`doll_core.hookspecs.doll_register_explainers`).

    Its factory's parameters are those that change the maps. A factory that declares a
    keyword ``engine`` is given the engine's execution options there, one
    :class:`doll_core.attribution.engine.EngineOptions` (rows per pass, autocast, compile,
    check intervals), by :func:`doll_core.attribution.api.create_explainer`; one without it
    gets none.

    Optional (:data:`OPTIONAL_MEMBERS`): ``performance_report() -> dict``, what the
    explainer measured about its own runs (autocast error, compile time, completeness
    deltas), which a label store's generation report keeps (default ``None``: nothing)."""

    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Attribute every target of every image.

        :param model: a classifier in eval mode, images -> logits ``[B, num_classes]``.
        :param images: ``float [B, C, H, W]``.
        :param targets: ``long [B, T]`` observation indices; ``-1`` = no target here.
        :returns: ``float32 [B, T, H, W]`` on ``images.device``: the raw attribution summed
            over the input channels (post-processing is the core's job, not the
            explainer's); all zeros where the target is ``-1``.
        """
        ...


@runtime_checkable
class Fusion(Protocol):
    """Merges the maps of several classifiers into one (registered by
    :func:`doll_core.hookspecs.doll_register_fusions`).

    The core calls :meth:`fuse` through :func:`doll_core.labels.fusion.fuse_maps`, which
    checks its inputs and its result as stated below, both when labels are generated
    (``B`` images per batch, ``T`` target slots) and when single-classifier stores are
    fused afterwards by :func:`doll_core.labels.combine.fuse_stores` (``B`` = the maps of
    one shard, ``T = 1``).
    """

    def fuse(self, maps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse the classifiers' maps of every target slot.

        :param maps: ``float32 [N_clf, B, T, H, W]`` in ``[0, 1]``, finite, every
            classifier post-processed alike: ``maps[k, b, t]`` is classifier ``k``'s map of
            the ``t``-th target of image ``b``.
        :param weights: ``float32 [N_clf, B, T]`` on ``maps.device``, finite, in ``[0, 1]``:
            ``weights[k, b, t]`` is classifier ``k``'s validation AUROC for the observation
            of slot ``(b, t)`` (0.5 when its checkpoint records none). One weight per map,
            not per classifier: broadcast it over the pixels as
            ``weights[..., None, None]``. The core always passes them; ``None`` comes only
            from a direct caller of ``fuse_maps``, and a fusion that needs weights must
            then raise. A padding slot (target ``-1``) carries an arbitrary weight and its
            fused map is zeroed afterwards.
        :returns: ``[B, T, H, W]`` on ``maps.device``, finite, in ``[0, 1]`` (1e-6
            tolerance; the core clamps and converts to float32).
        """
        ...


@runtime_checkable
class SegHead(Protocol):
    """A segmentation architecture, encoder and decoder trained end to end (registered by
    :func:`doll_core.hookspecs.doll_register_seg_heads`).

    The model that :meth:`build` returns maps images ``[B, in_channels, H, W]`` to logits
    ``[B, classes, H, W]`` and has two parts the core works with:

    - its **encoder**, the attribute ``encoder`` (an ``nn.Module``): pre-training and
      fine-tuning load a classifier's weights into it with
      :func:`doll_core.transfer.load_classifier_into_encoder`, so its ``state_dict`` must
      have the names and shapes of the ``encoder_state_dict`` of every backbone whose
      ``encoder_name`` is this encoder's name; ``frozen_encoder`` fine-tuning freezes
      exactly ``encoder.parameters()``.
    - its **output layer**, found by :meth:`output_layer` and replaced by
      :meth:`set_output_layer`: an ``nn.Conv2d`` from the decoder's features
      ``[B, F, h, w]`` to ``[B, classes, h, w]``. Whatever the model does after it must
      work for any number of channels (smp only upsamples to ``H, W``); parameters there
      would count as decoder parameters.

    Fine-tuning puts a new output layer in place for the downstream classes: a seeded
    ``nn.Conv2d(F, classes', ...)`` with the old one's kernel size, stride, padding,
    dilation and bias, optionally behind an adapter block,
    ``nn.Sequential(ResidualAdapter(F), conv)``
    (:class:`doll_core.segmentation.models.ResidualAdapter`). The parameters of the
    output layer are the *head* parameters (the only ones ``adapter_only`` trains, with the
    output layer in train mode and the rest of the model in eval mode), those of
    ``encoder`` the encoder's, and all the others the decoder's.
    """

    def build(self, encoder: str, classes: int, in_channels: int) -> nn.Module:
        """Return a freshly initialised model: images ``[B, in_channels, H, W]`` -> logits
        ``[B, classes, H, W]``, its encoder (named ``encoder``) as the attribute
        ``encoder`` and an output layer of ``classes`` output channels."""
        ...

    def output_layer(self, model: nn.Module) -> nn.Module:
        """The module in ``model``'s output slot (``model`` was built by :meth:`build`): the
        ``nn.Conv2d`` that :meth:`build` made, or whatever :meth:`set_output_layer` put
        there last."""
        ...

    def set_output_layer(self, model: nn.Module, layer: nn.Module) -> None:
        """Put ``layer`` in ``model``'s output slot, in place of the current output layer,
        as a submodule of ``model`` (at the same place in its module order, so that
        parameter order and state-dict names stay stable). ``layer`` takes the features
        ``[B, F, h, w]`` the old layer took and returns ``[B, classes', h, w]``."""
        ...


@runtime_checkable
class DatasetReader(Protocol):
    """A sized, indexable map-style dataset (``len(ds)``, ``ds[i]``) over one on-disk
    layout, built by its factory as ``factory(root, **options)`` (registered by
    :func:`doll_core.hookspecs.doll_register_datasets`, with the metadata ``task`` =
    ``"classification"`` or ``"segmentation"`` and ``splits``, the split names ``doll data
    inspect`` counts). The core passes the factory the keywords of
    :data:`DATASET_FACTORY_KEYWORDS` and the user's options.

    ``ds[i]`` is a dict: ``image`` float ``[C, H, W]`` in ``[0, 1]`` at the size asked for,
    ``id`` (str), and for a **classification** reader ``labels`` float32 ``[14]`` (1, 0,
    or the uncertainty policy's value) and ``label_mask`` bool ``[14]`` (False: no label,
    left out of the loss), in the order of :data:`doll_core.observations.OBSERVATIONS`; for
    a **segmentation** reader ``mask`` float ``[K, H, W]`` in ``{0, 1}`` (one channel per
    class of ``classes``) and optionally ``mask_weight`` ``[K, H, W]`` (0 where a pixel is
    ignored). An image that cannot be read is returned as a
    :class:`doll_core.data.samples.SkippedSample` when ``on_error="skip"``.

    Optional (:data:`OPTIONAL_MEMBERS`): ``sample_id(index) -> str`` (default: none, and a
    split by file or patient, or a label store, is refused), ``summary() -> dict`` (what
    ``doll data inspect`` prints; default ``{"images": len(ds)}``), ``classes`` (a
    segmentation reader's class names; default ``None``: one class, ``foreground``),
    ``label_arrays(index) -> (labels [14], mask [14])`` (a classification reader's labels
    without reading the image: scoring explanations on the phantom uses it) and
    ``image_cache`` (a settable attribute: a reader that has one reads decoded images from
    :class:`doll_core.data.decoded.DecodedImages`). Optional on the factory
    (:data:`OPTIONAL_FACTORY_MEMBERS`): ``label_rules(options) -> str | None``, a digest
    of the rules by which the reader maps its source's findings to observations, which
    enters the classifier stage's inputs.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@runtime_checkable
class Metric(Protocol):
    """An explanation-quality metric (registered by
    :func:`doll_core.hookspecs.doll_register_metrics`), in the manner of Quantus'
    ``Metric``: metadata and one override point.

    ``category`` is one of :class:`doll_core.metrics.base.MetricCategory` (faithfulness,
    randomisation, complexity, localization); ``higher_is_better`` says the score's
    direction; ``needs`` names what :meth:`compute` reads beyond the maps and targets, a
    subset of :data:`doll_core.metrics.base.NEEDS` (``images``, ``model``, ``masks``,
    ``explain``): the core refuses, before any work, to run a metric on data that lacks
    what it needs. :class:`doll_core.metrics.base.BatchMetric` is a base class that
    states all of this once; a plugin need not inherit from it.
    """

    category: str
    higher_is_better: bool
    needs: frozenset[str]

    def compute(self, batch: Any) -> Any:
        """Score every map of a batch, all targets at once.

        :param batch: a :class:`doll_core.metrics.base.MetricBatch`: ``maps`` float32
            ``[B, T, H, W]`` (raw attributions, as the explainer returned them),
            ``targets`` long ``[B, T]`` (``-1`` = padding), and what ``needs`` names.
        :returns: float ``[B, T]`` (``nan`` where the score is undefined; padding slots
            are set to ``nan`` by the core), or a
            :class:`doll_core.metrics.base.MetricScores` whose ``values`` are that and
            whose ``steps`` hold per-step scores ``[B, T]`` (one per layer of a cascading
            randomisation, say). The core checks the shape and converts to float64.
        """
        ...


#: The members the registry requires on the object that a plugin's factory returns.
REQUIRED_MEMBERS: dict[PluginKind, tuple[str, ...]] = {
    PluginKind.BACKBONE: ("build", "cam_layer"),
    PluginKind.EXPLAINER: ("attribute",),
    PluginKind.FUSION: ("fuse",),
    PluginKind.SEG_HEAD: ("build", "output_layer", "set_output_layer"),
    PluginKind.DATASET: ("__len__", "__getitem__"),
    PluginKind.METRIC: ("compute", "category", "higher_is_better", "needs"),
}

#: Members the core reads where an object has them, with what it uses where one lacks
#: them (see each protocol's docstring).
OPTIONAL_MEMBERS: dict[PluginKind, dict[str, Any]] = {
    PluginKind.BACKBONE: {"encoder_name": None, "unavailable": ()},
    PluginKind.EXPLAINER: {"performance_report": None},
    PluginKind.FUSION: {},
    PluginKind.SEG_HEAD: {},
    PluginKind.DATASET: {
        "sample_id": None,
        "summary": None,
        "classes": None,
        "label_arrays": None,
        "image_cache": None,
    },
    PluginKind.METRIC: {},
}

#: Attributes of a factory that the core reads where it has them, with their defaults.
OPTIONAL_FACTORY_MEMBERS: dict[PluginKind, dict[str, Any]] = {
    PluginKind.BACKBONE: {"input_mean": None, "input_std": None},
    PluginKind.DATASET: {"label_rules": None},
}

#: The keywords the core passes to a dataset factory, besides the user's options:
#: ``root`` always; ``split`` where a stage reads one split (a classifier's train and
#: validation splits, label generation's split, a task's ``folders`` splits); ``size``
#: (side of the images returned, or ``None`` for their own size), ``grayscale`` (one
#: channel, else three) and ``on_error`` (``"skip"`` or ``"fail"``) where a stage reads
#: images. A reader must accept all of them.
DATASET_FACTORY_KEYWORDS: tuple[str, ...] = ("root", "split", "size", "grayscale", "on_error")


def optional_member(plugin: object, kind: str, name: str) -> Any:
    """``plugin``'s member ``name``, or its declared default (:data:`OPTIONAL_MEMBERS`).

    :raises KeyError: ``name`` is not an optional member of ``kind`` (a bug in the core:
        whatever it reads must be declared here)."""
    return getattr(plugin, name, _declared(OPTIONAL_MEMBERS, kind, name, "member"))


def offers_member(plugin: object, kind: str, name: str) -> bool:
    """Whether ``plugin`` has the optional member ``name`` (one the core sets, such as a
    reader's ``image_cache``). :raises KeyError: as :func:`optional_member`."""
    _declared(OPTIONAL_MEMBERS, kind, name, "member")
    return hasattr(plugin, name)


def _declared(table: dict[PluginKind, dict[str, Any]], kind: str, name: str, what: str) -> Any:
    """The default ``table`` declares for ``kind``'s optional ``name``; a KeyError (naming
    it as an optional ``what``) where it declares none."""
    declared = table.get(PluginKind(kind), {})
    if name not in declared:
        raise KeyError(f"{name!r} is not an optional {what} of the {kind} protocol")
    return declared[name]


def optional_factory_member(factory: object, kind: str, name: str) -> Any:
    """The factory's attribute ``name``, or its declared default
    (:data:`OPTIONAL_FACTORY_MEMBERS`).

    :raises KeyError: ``name`` is not declared for ``kind``'s factories."""
    return getattr(factory, name, _declared(OPTIONAL_FACTORY_MEMBERS, kind, name, "factory member"))


#: The protocol of each kind, named in the registry's message about a missing member.
PROTOCOLS: dict[PluginKind, type] = {
    PluginKind.BACKBONE: Backbone,
    PluginKind.EXPLAINER: Explainer,
    PluginKind.FUSION: Fusion,
    PluginKind.SEG_HEAD: SegHead,
    PluginKind.DATASET: DatasetReader,
    PluginKind.METRIC: Metric,
}
