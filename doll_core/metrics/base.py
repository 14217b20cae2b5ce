"""The metric plugin kind's shared parts: what a metric is given (:class:`MetricBatch`),
what it may return (:class:`MetricScores`), a base class that states a metric's metadata
once (:class:`BatchMetric`), and :func:`run_metric`, which checks a metric's needs and its
result and names the metric in every error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import torch
from torch import nn

from doll_core.errors import DollError, PluginError


class MetricCategory(StrEnum):
    """The families of explanation-quality metrics (Quantus' grouping, less robustness and
    axiomatic checks)."""

    FAITHFULNESS = "faithfulness"
    RANDOMISATION = "randomisation"
    COMPLEXITY = "complexity"
    LOCALIZATION = "localization"


#: What a metric may need beyond the maps and targets; the input images ``[B, C, H, W]``,
#: the classifier, ground-truth masks ``bool [B, T, H, W]``, and ``explain`` (the same
#: explainer, with the same parameters, callable on another model or other targets).
NEEDS = frozenset({"images", "model", "masks", "explain"})

#: ``explain(model, images [B, C, H, W], targets long [B, T]) -> float32 [B, T, H, W]``.
ExplainFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class MetricBatch:
    """One batch of explanations and what metrics may read about it.

    :param maps: float32 ``[B, T, H, W]``: raw attributions (summed over channels).
    :param targets: long ``[B, T]`` observation indices; ``-1`` = padding slot.
    :param images: float ``[B, C, H, W]`` the maps explain, or ``None``.
    :param model: the classifier in eval mode (images -> logits ``[B, classes]``), or ``None``.
    :param masks: bool ``[B, T, H, W]`` ground truth of each target, or ``None``.
    :param explain: the explainer that made ``maps`` (see :data:`ExplainFunction`), or
        ``None``.
    :param seed: seed of every random draw a metric makes (subsets, noise, layer
        re-initialisation); the same seed gives every explainer the same draws.
    :param max_rows: most images per forward pass a metric sends through ``model`` (an
        execution option: it never changes a score).
    """

    maps: torch.Tensor
    targets: torch.Tensor
    images: torch.Tensor | None = None
    model: nn.Module | None = None
    masks: torch.Tensor | None = None
    explain: ExplainFunction | None = None
    seed: int = 0
    max_rows: int = 256

    @property
    def real(self) -> torch.Tensor:
        """bool ``[B, T]``: the slots that hold a target."""
        return self.targets >= 0


@dataclass
class MetricScores:
    """A metric's result: ``values`` float ``[B, T]`` (``nan`` = undefined), and
    ``steps``, per-step scores ``[B, T]`` by step name (e.g. one per randomised layer)."""

    values: torch.Tensor
    steps: Mapping[str, torch.Tensor] = field(default_factory=dict)


class BatchMetric:
    """Base class of the built-in metrics: the metadata as class attributes and one
    override point, :meth:`compute`.

    ``reference`` cites where the definition comes from; the first line of the class
    docstring is the definition in one sentence (shown by ``doll plugins list``).
    """

    category: ClassVar[str]
    #: the score's direction; a class attribute, which an instance whose parameters
    #: reverse it (a least-relevant-first deletion) overrides
    higher_is_better: bool = True
    needs: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[str] = ""

    def compute(self, batch: MetricBatch) -> torch.Tensor | MetricScores:
        """Scores ``[B, T]`` of ``batch``'s maps (see :class:`doll_core.interfaces.Metric`)."""
        raise NotImplementedError


def check_needs(metric: Any, name: str, available: frozenset[str] | set[str]) -> None:
    """Refuse a metric whose ``needs`` the data cannot give, before any work.

    :raises PluginError: when ``needs`` is not a subset of :data:`NEEDS` or of what the
        metric's category allows.
    :raises DollError: naming the metric and what is missing.
    """
    needs = getattr(metric, "needs", None)
    if not isinstance(needs, frozenset | set) or not set(needs) <= NEEDS:
        raise PluginError(
            f"metric {name!r} declares needs {needs!r}; needs are a set of: "
            f"{', '.join(sorted(NEEDS))}"
        )
    category = getattr(metric, "category", None)
    if category not in {c.value for c in MetricCategory}:
        raise PluginError(
            f"metric {name!r} declares category {category!r}; categories are: "
            f"{', '.join(c.value for c in MetricCategory)}"
        )
    missing = sorted(set(needs) - set(available))
    if missing:
        raise DollError(
            f"metric {name!r} needs {', '.join(missing)}, which this evaluation does not have"
            + (
                " (ground-truth masks come with the phantom or a --ground-truth file)"
                if "masks" in missing
                else ""
            )
        )


def run_metric(metric: Any, name: str, batch: MetricBatch) -> MetricScores:
    """``metric.compute(batch)``, checked: float64 ``[B, T]`` values on the CPU with
    padding slots ``nan`` (and the same for every step).

    :raises PluginError: naming the metric when the result is not a tensor (or
        :class:`MetricScores`) of shape ``[B, T]``.
    """
    result = metric.compute(batch)
    scores = result if isinstance(result, MetricScores) else MetricScores(result)
    checked = {"values": scores.values, **{f"step {k!r}": v for k, v in scores.steps.items()}}
    shape = tuple(batch.targets.shape)
    cleaned: dict[str, torch.Tensor] = {}
    for what, value in checked.items():
        if not isinstance(value, torch.Tensor):
            raise PluginError(
                f"metric {name!r} returned {type(value).__name__} as its {what}, not a tensor"
            )
        if tuple(value.shape) != shape:
            raise PluginError(
                f"metric {name!r} returned {what} of shape {list(value.shape)}; the "
                f"protocol asks for [B, T] = {list(shape)}"
            )
        value = value.detach().to("cpu", torch.float64)
        cleaned[what] = torch.where(batch.real.cpu(), value, torch.full_like(value, torch.nan))
    steps = {k: cleaned[f"step {k!r}"] for k in scores.steps}
    return MetricScores(cleaned["values"], steps)
