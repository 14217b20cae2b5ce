"""Faithfulness: does the model's output for a target fall when what the map calls
relevant is taken away (and rise when it is put back)?

Every metric here perturbs the image by the map's signed values (most relevant = most
positive), reads the model's output for the map's own target (its sigmoid probability by
default, or its logit), and sends all perturbed images of a batch, for all targets, through
the model in shared passes of ``max_rows`` images.
"""

from __future__ import annotations

import math

import torch

from doll_core.errors import DollError
from doll_core.metrics.base import BatchMetric, MetricBatch, MetricCategory
from doll_core.metrics.imputation import noisy_linear_imputation
from doll_core.metrics.perturbation import (
    OUTPUTS,
    Output,
    check_choice,
    curve_area,
    patch_grid,
    patch_ranks,
    perturbation_curves,
    target_outputs,
)
from doll_core.metrics.similarity import pearson
from doll_plugins.explainers.baselines import BLUR_SIGMA, make_baseline

#: How a perturbation replaces pixels: the blurred image, each image's mean, or black.
PERTURBATION_BASELINES = ("blurred", "mean", "zeros")


def _inputs(batch: MetricBatch) -> tuple[torch.nn.Module, torch.Tensor]:
    assert batch.model is not None and batch.images is not None  # the core checked ``needs``
    return batch.model, batch.images


class _Perturbation(BatchMetric):
    """Shared parameters of the patch-curve metrics."""

    category = MetricCategory.FAITHFULNESS
    needs = frozenset({"model", "images"})

    def __init__(
        self,
        patch: int = 8,
        steps: int = 16,
        baseline: str = "blurred",
        blur_sigma: float = BLUR_SIGMA,
        output: str = "probability",
        order: str = "morf",
    ) -> None:
        """:param patch: side of the square pixel patches that are removed together.
        :param steps: points of the curve after the unperturbed one (each removes
            ``1 / steps`` of the patches). :param baseline: what replaces a patch:
            ``blurred``, ``mean`` or ``zeros``. :param blur_sigma: the blur's sigma as a
            share of the image side. :param output: ``probability`` (sigmoid) or ``logit``.
        :param order: ``morf`` (most relevant patches first) or ``lerf`` (least relevant
            first; the direction of the scores then reverses). ABPC takes both curves and
            ignores it."""
        if patch < 1 or steps < 1:
            raise DollError(f"patch and steps must be >= 1, got {patch} and {steps}")
        check_blur_sigma(blur_sigma)
        self.order = check_choice(order, ("morf", "lerf"), "order")
        if self.order == "lerf" and type(self) is not ABPC:  # least relevant: little change
            self.higher_is_better = not type(self).higher_is_better
        self.patch, self.steps, self.blur_sigma = patch, steps, blur_sigma
        self.baseline = check_choice(baseline, PERTURBATION_BASELINES, "perturbation baseline")
        self.output: Output = check_choice(output, OUTPUTS, "output")  # type: ignore[assignment]

    def curves(self, batch: MetricBatch, *, order: str, insertion: bool) -> torch.Tensor:
        model, images = _inputs(batch)
        reference = make_baseline(images, self.baseline, blur_sigma=self.blur_sigma)
        return perturbation_curves(
            model,
            images,
            batch.maps,
            batch.targets,
            reference,
            patch=self.patch,
            steps=self.steps,
            order=order,  # type: ignore[arg-type]
            insertion=insertion,
            output=self.output,
            max_rows=batch.max_rows,
        )


def check_blur_sigma(blur_sigma: float) -> None:
    """:raises DollError: unless the blur's sigma (a share of the image side) is a finite
    number above 0."""
    if not (math.isfinite(blur_sigma) and blur_sigma > 0):
        raise DollError(f"blur_sigma must be a finite number > 0, got {blur_sigma}")


class Deletion(_Perturbation):
    """Area under the deletion curve: the target's output as the most relevant patches
    are replaced by the baseline, from none to all (lower = more faithful)."""

    higher_is_better = False
    reference = "Petsiuk et al., BMVC 2018 (RISE); Samek et al., TNNLS 2017"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        return curve_area(self.curves(batch, order=self.order, insertion=False))


class Insertion(_Perturbation):
    """Area under the insertion curve: the target's output as the most relevant patches
    are put back into the baseline, from none to all (higher = more faithful)."""

    higher_is_better = True
    reference = "Petsiuk et al., BMVC 2018 (RISE)"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        return curve_area(self.curves(batch, order=self.order, insertion=True))


class ABPC(_Perturbation):
    """Area between the perturbation curves: the deletion area with the least relevant
    patches first minus that with the most relevant first (higher = more faithful)."""

    higher_is_better = True
    reference = "Schulz et al., ICLR 2020 (IBA)"

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        least = curve_area(self.curves(batch, order="lerf", insertion=False))
        most = curve_area(self.curves(batch, order="morf", insertion=False))
        return least - most


class ROAD(BatchMetric):
    """Mean of the target's output after the most relevant ``fractions`` of the pixels are
    removed by noisy linear imputation (RemOve And Debias; lower = more faithful)."""

    category = MetricCategory.FAITHFULNESS
    higher_is_better = False
    needs = frozenset({"model", "images"})
    reference = "Rong et al., ICML 2022 (Quantus ROAD)"

    def __init__(
        self,
        fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        noise: float = 0.01,
        order: str = "morf",
        output: str = "probability",
    ) -> None:
        """:param fractions: shares of the pixels removed, each in ``(0, 1)``.
        :param noise: standard deviation of the noise added to imputed pixels.
        :param order: ``morf`` (most relevant first) or ``lerf``. :param output:
            ``probability`` (sigmoid) or ``logit``."""
        if not fractions or not all(0 < f < 1 for f in fractions):
            raise DollError(f"ROAD fractions must lie in (0, 1), got {list(fractions)}")
        if noise < 0 or not math.isfinite(noise):
            raise DollError(f"ROAD noise must be a finite number >= 0, got {noise}")
        self.fractions, self.noise = tuple(fractions), noise
        self.order = check_choice(order, ("morf", "lerf"), "order")
        self.output: Output = check_choice(output, OUTPUTS, "output")  # type: ignore[assignment]

    def curves(self, batch: MetricBatch) -> torch.Tensor:
        """float64 ``[B, T, F]``: the output at each fraction."""
        model, images = _inputs(batch)
        height, width = batch.maps.shape[-2:]
        index, pixels = patch_grid(height, width, 1)
        real = batch.real
        pairs = real.nonzero()
        result = torch.full((*real.shape, len(self.fractions)), torch.nan, dtype=torch.float64)
        if pairs.shape[0] == 0:
            return result
        ranks = patch_ranks(
            batch.maps[real],
            index.to(batch.maps.device),
            pixels,
            self.order,  # type: ignore[arg-type]
        )
        ranks = ranks.view(-1, 1, 1, height, width)  # [M, 1, 1, H, W]
        counts = torch.tensor([int(pixels * f) for f in self.fractions], device=ranks.device)
        removed_all = ranks < counts[None, :, None, None, None]  # [M, F, 1, H, W]
        classes = batch.targets[real]
        generator = torch.Generator().manual_seed(batch.seed)
        fractions = len(self.fractions)
        values = torch.empty(pairs.shape[0], fractions, dtype=torch.float64)
        per_chunk = max(1, batch.max_rows // fractions)
        for start in range(0, pairs.shape[0], per_chunk):
            chunk = slice(start, start + per_chunk)
            source = images[pairs[chunk, 0]][:, None].expand(-1, fractions, -1, -1, -1)
            removed = removed_all[chunk]
            imputed = noisy_linear_imputation(
                source.flatten(0, 1), removed.flatten(0, 1), noise=self.noise, generator=generator
            )
            outputs = target_outputs(
                model,
                imputed,
                classes[chunk].repeat_interleave(fractions),
                output=self.output,
                max_rows=batch.max_rows,
            )
            values[chunk] = outputs.view(-1, fractions)
        result[real.cpu()] = values
        return result

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        return self.curves(batch).mean(dim=2)


class FaithfulnessCorrelation(BatchMetric):
    """Pearson correlation, over random pixel subsets, between the relevance a subset
    holds and the drop of the target's output when the subset is set to the baseline
    (higher = more faithful)."""

    category = MetricCategory.FAITHFULNESS
    higher_is_better = True
    needs = frozenset({"model", "images"})
    reference = "Bhatt et al., IJCAI 2020 (Quantus FaithfulnessCorrelation)"

    def __init__(
        self,
        runs: int = 50,
        subset: int = 128,
        baseline: str = "zeros",
        blur_sigma: float = BLUR_SIGMA,
        output: str = "probability",
    ) -> None:
        """:param runs: random subsets per map. :param subset: pixels per subset.
        :param baseline: ``zeros`` (Quantus' ``black``), ``mean`` or ``blurred``.
        :param blur_sigma: the blur's sigma as a share of the image side.
        :param output: ``probability`` (sigmoid) or ``logit``."""
        if runs < 2 or subset < 1:
            raise DollError(f"runs must be >= 2 and subset >= 1, got {runs} and {subset}")
        check_blur_sigma(blur_sigma)
        self.runs, self.subset, self.blur_sigma = runs, subset, blur_sigma
        self.baseline = check_choice(baseline, PERTURBATION_BASELINES, "perturbation baseline")
        self.output: Output = check_choice(output, OUTPUTS, "output")  # type: ignore[assignment]

    def subsets(self, pairs: int, pixels: int, seed: int) -> torch.Tensor:
        """long ``[M, runs, subset]``: pixel indices drawn without replacement, seeded (the
        same seed gives every explainer the same subsets)."""
        generator = torch.Generator().manual_seed(seed)
        keys = torch.rand(pairs, self.runs, pixels, generator=generator)
        return keys.argsort(dim=2)[..., : min(self.subset, pixels)]

    def compute(self, batch: MetricBatch) -> torch.Tensor:
        model, images = _inputs(batch)
        real = batch.real
        pairs = real.nonzero()
        result = torch.full(real.shape, torch.nan, dtype=torch.float64)
        if pairs.shape[0] == 0:
            return result
        pixels = batch.maps.shape[-2] * batch.maps.shape[-1]
        subsets = self.subsets(pairs.shape[0], pixels, batch.seed).to(images.device)
        reference = make_baseline(images, self.baseline, blur_sigma=self.blur_sigma)
        result[real.cpu()] = correlation_of_subsets(
            model,
            images[pairs[:, 0]],
            batch.maps[real],
            batch.targets[real],
            reference[pairs[:, 0]],
            subsets,
            output=self.output,
            max_rows=batch.max_rows,
        )
        return result


def correlation_of_subsets(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    baseline: torch.Tensor,
    subsets: torch.Tensor,
    *,
    output: Output,
    max_rows: int,
) -> torch.Tensor:
    """float64 ``[M]``: faithfulness correlation of ``M`` maps ``[M, H, W]`` of images
    ``[M, C, H, W]`` for ``classes`` ``[M]``, with the given pixel ``subsets`` (long
    ``[M, R, S]``) set to ``baseline`` ``[M, C, H, W]``."""
    pairs, runs, _ = subsets.shape
    channels, height, width = images.shape[1:]
    flat_maps = maps.flatten(1).double()
    relevance = flat_maps.gather(1, subsets.flatten(1)).view(pairs, runs, -1).sum(dim=2)
    full = target_outputs(model, images, classes, output=output, max_rows=max_rows)
    drops = torch.empty(pairs, runs, dtype=torch.float64)
    per_chunk = max(1, max_rows // runs)
    for start in range(0, pairs, per_chunk):
        chunk = slice(start, start + per_chunk)
        count = subsets[chunk].shape[0]
        removed = torch.zeros(count, runs, height * width, dtype=torch.bool, device=images.device)
        removed.scatter_(2, subsets[chunk], True)
        removed = removed.view(count, runs, 1, height, width)
        perturbed = torch.where(removed, baseline[chunk][:, None], images[chunk][:, None])
        outputs = target_outputs(
            model,
            perturbed.reshape(count * runs, channels, height, width),
            classes[chunk].repeat_interleave(runs),
            output=output,
            max_rows=max_rows,
        )
        drops[chunk] = full[chunk][:, None] - outputs.view(count, runs)
    return pearson(relevance.cpu(), drops)
