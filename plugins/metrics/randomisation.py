"""Randomisation (sanity checks): does the map change when what it should depend on
changes, the model's learned weights or the class explained? Lower similarity is better.

Both metrics explain again with the same explainer and parameters (``needs`` has
``explain``), for all images and targets of the batch in one call per model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from doll_core.errors import DollError
from doll_core.metrics.base import BatchMetric, MetricBatch, MetricCategory, MetricScores
from doll_core.metrics.perturbation import check_choice
from doll_core.metrics.similarity import spearman, ssim

SIMILARITIES = ("spearman", "ssim")


def map_similarity(
    a: torch.Tensor, b: torch.Tensor, similarity: str, *, absolute: bool
) -> torch.Tensor:
    """float64 ``[N]``: the similarity of maps ``a`` and ``b`` ``[N, H, W]``: Spearman's
    rank correlation, or SSIM of the maps each scaled by its largest magnitude (Quantus'
    ``normalise_by_max``), both of ``|map|`` when ``absolute``."""
    if absolute:
        a, b = a.abs(), b.abs()
    if similarity == "spearman":
        return spearman(a, b)
    return ssim(_by_max(a), _by_max(b))


def _by_max(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.double().flatten(1).abs().amax(dim=1)
    return maps.double() / torch.where(peak > 0, peak, 1.0)[:, None, None]


def randomisable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``model`` with ``reset_parameters``, from the output back to the
    input (the reverse of ``named_modules`` order), as Quantus' ``top_down`` order lists
    them."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "reset_parameters")][::-1]


def cascading_randomisation(model: nn.Module, seed: int) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer name, model)`` after re-initialising each further layer of a copy of
    ``model`` in :func:`randomisable_layers` order (cumulative: every layer above stays
    random). Each layer's ``reset_parameters`` draws from the seed ``seed + 1``, as
    Quantus' ``get_random_layer_generator`` does, without touching the global generator."""
    clone = copy.deepcopy(model).eval()
    for name, module in randomisable_layers(clone):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            module.reset_parameters()  # type: ignore[operator]
        yield name, clone


class CascadingRandomisation(BatchMetric):
    """Mean similarity between the map of the trained model and the maps of copies whose
    layers are re-initialised one by one from the top (cumulatively); per-layer
    similarities are kept as steps."""

    category = MetricCategory.RANDOMISATION
    higher_is_better = False
    needs = frozenset({"model", "images", "explain"})
    reference = "Adebayo et al., NeurIPS 2018 (Quantus MPRT)"

    def __init__(
        self, similarity: str = "spearman", absolute: bool = True, layers: int | None = 8
    ) -> None:
        """:param similarity: ``spearman`` or ``ssim``. :param absolute: compare ``|map|``
        (Adebayo et al. and Quantus do). :param layers: compare after each of at most this
        many evenly spaced layers of the cascade (the last, all layers random, always
        included): one explanation per compared layer, so 8 of ResNet-18's 41 cost a
        fifth; ``None``: after every layer, as Quantus does."""
        self.similarity = check_choice(similarity, SIMILARITIES, "similarity")
        if layers is not None and layers < 1:
            raise DollError(f"layers must be >= 1 or None, got {layers}")
        self.absolute, self.layers = absolute, layers

    def chosen(self, total: int) -> set[int]:
        """Indices (0-based, cascade order) of the layers after which maps are compared."""
        if self.layers is None or self.layers >= total:
            return set(range(total))
        return {round((k + 1) * total / self.layers) - 1 for k in range(self.layers)}

    def compute(self, batch: MetricBatch) -> MetricScores:
        assert batch.model is not None and batch.images is not None and batch.explain
        real = batch.real
        shape = real.shape
        total = len(randomisable_layers(batch.model))
        if total == 0:
            raise DollError("cascading randomisation: the model has no layer to re-initialise")
        chosen = self.chosen(total)
        steps: dict[str, torch.Tensor] = {}
        for position, (name, randomised) in enumerate(
            cascading_randomisation(batch.model, batch.seed)
        ):
            if position not in chosen:
                continue
            maps = batch.explain(randomised, batch.images, batch.targets)
            values = torch.full(shape, torch.nan, dtype=torch.float64)
            values[real.cpu()] = map_similarity(
                batch.maps[real], maps[real], self.similarity, absolute=self.absolute
            ).cpu()
            steps[name or "<model>"] = values
        mean = torch.stack(list(steps.values())).nanmean(dim=0)
        return MetricScores(mean, steps)


class RandomLogit(BatchMetric):
    """Similarity between the map of the target and the map of another observation drawn
    at random (seeded): a map that does not depend on the class explained scores high."""

    category = MetricCategory.RANDOMISATION
    higher_is_better = False
    needs = frozenset({"model", "images", "explain"})
    reference = "Sixt et al., ICML 2020 (Quantus RandomLogit)"

    def __init__(self, similarity: str = "ssim", absolute: bool = False) -> None:
        """:param similarity: ``ssim`` (Quantus' default) or ``spearman``.
        :param absolute: compare ``|map|``."""
        self.similarity = check_choice(similarity, SIMILARITIES, "similarity")
        self.absolute = absolute

    @staticmethod
    def other_targets(targets: torch.Tensor, classes: int, seed: int) -> torch.Tensor:
        """long ``[B, T]``: for each real target, another class in ``0 … classes - 1``
        drawn uniformly (seeded); ``-1`` stays ``-1``."""
        if classes < 2:
            raise DollError("random logit needs a model with at least two outputs")
        generator = torch.Generator().manual_seed(seed)
        shift = torch.randint(1, classes, targets.shape, generator=generator).to(targets.device)
        return torch.where(targets >= 0, (targets + shift) % classes, targets)

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        assert batch.model is not None and batch.images is not None and batch.explain
        with torch.no_grad():
            classes = int(batch.model(batch.images[:1]).shape[1])
        others = self.other_targets(batch.targets, classes, batch.seed)
        maps = batch.explain(batch.model, batch.images, others)
        real = batch.real
        values = torch.full(real.shape, torch.nan, dtype=torch.float64)
        values[real.cpu()] = map_similarity(
            batch.maps[real], maps[real], self.similarity, absolute=self.absolute
        ).cpu()
        return values
