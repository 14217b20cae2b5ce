"""Gradient explainers on DoLL's multi-target engine: Integrated Gradients, Saliency,
Input x Gradient and SmoothGrad. Each equals captum's per-target result (fp32)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from doll_core.attribution.api import relative_errors
from doll_core.attribution.engine import (
    EngineOptions,
    engine_or_default,
    network_to_run,
    rows_per_chunk,
    slot_gradients,
)
from doll_core.attribution.stem import stem_name
from doll_core.compiling import compiled
from doll_core.errors import DollError
from doll_plugins.explainers.baselines import BLUR_SIGMA, check_baseline, make_baseline

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


class _EngineExplainer:
    """Shared by the engine's explainers: reduced precision only with its error measured.

    With ``engine.autocast`` set, the first image of every call (or of every
    ``engine.autocast_check_every``-th call, the first included) is explained again in fp32
    (eagerly) and the relative error (max |difference| / max |fp32 map|) is stored in
    ``autocast_error`` (the last call) and ``autocast_errors`` (every call), reported in a
    warning on the first call and in :meth:`performance_report`, so that a
    reduced-precision result never goes unqualified. The relative L2 error
    (||difference|| / ||fp32 map||, less sensitive to a single pixel) is kept alongside in
    ``autocast_l2_errors``. With ``compile``, the compile time and
    any fallback to eager are in :meth:`performance_report` too.
    """

    def __init__(self, engine: EngineOptions | None = None) -> None:
        """:param engine: the execution options (:class:`EngineOptions`), shared by every
        engine explainer; default: ``EngineOptions()``."""
        self.options = engine_or_default(engine)
        #: the relative error of the last check, and of every check (all models together)
        self.autocast_error: float | None = None
        self.autocast_errors: list[float] = []
        #: the relative L2 error of every check
        self.autocast_l2_errors: list[float] = []
        #: per model explained (by id): the model and its number of calls. Label generation
        #: calls one explainer for several classifiers in turn, so the every-N-th-call
        #: check and the compile report are kept per model
        self._models: dict[int, tuple[nn.Module, int]] = {}
        #: rows per forward pass at the last call (``max_rows``, or what the memory budget
        #: allowed)
        self.row_limit: int | None = None

    def performance_report(self) -> dict[str, Any]:
        """How the maps were computed, for a run's metrics: autocast mode and its measured
        error against fp32 (max and mean over checks, max-abs and L2), compile time or
        fallback of each model explained, channels_last, rows per pass."""
        errors, l2_errors = self.autocast_errors, self.autocast_l2_errors
        report: dict[str, Any] = {
            "autocast": self.options.autocast,
            "autocast_relative_error_max": max(errors) if errors else None,
            "autocast_relative_error_mean": sum(errors) / len(errors) if errors else None,
            "autocast_relative_l2_max": max(l2_errors) if l2_errors else None,
            "autocast_relative_l2_mean": sum(l2_errors) / len(l2_errors) if l2_errors else None,
            "autocast_checks": len(errors),
            "channels_last": self.options.channels_last,
            "fp32_stem": self.options.fp32_stem,
            # the layer run in fp32, per model explained (None: no Conv2d, nothing done)
            "fp32_stem_layer": [stem_name(model) for model, _ in self._models.values()]
            if self.options.fp32_stem and self.options.autocast
            else None,
            "row_limit": self.row_limit,
            "compile": None,
        }
        if self.options.compile and self._models:
            reports = [
                compiled(network_to_run(model, self.options)).report()
                for model, _ in self._models.values()
            ]
            report["compile"] = reports[0] if len(reports) == 1 else reports
        return report

    def _maps(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, options: EngineOptions
    ) -> torch.Tensor:
        raise NotImplementedError

    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """images ``[B, C, H, W]``, targets ``long [B, T]`` (-1 = none) -> ``[B, T, H, W]``."""
        _, calls = self._models.get(id(model), (model, 0))
        self._models[id(model)] = (model, calls + 1)
        if len(images):
            self.row_limit = rows_per_chunk(model, images[:1], self.options)
        maps = self._maps(model, images, targets, self.options)
        explained = torch.nonzero((targets >= 0).any(dim=1)).flatten()
        if (
            self.options.autocast is not None
            and calls % self.options.autocast_check_every == 0
            and len(explained)  # measured on the first image that has a target
        ):
            first = int(explained[0])
            picked = slice(first, first + 1)
            full = dataclasses.replace(self.options, autocast=None, compile=False)
            reference = self._maps(model, images[picked], targets[picked], full)
            errors = relative_errors(maps[picked], reference)
            error = errors["max_abs"]
            self.autocast_error = error
            self.autocast_errors.append(error)
            self.autocast_l2_errors.append(errors["l2"])
            if len(self.autocast_errors) == 1:
                warnings.warn(
                    f"{type(self).__name__} with {self.options.autocast} autocast: relative "
                    f"error {error:.2e} against fp32 (measured on the first explained image "
                    "of each batch; see the run's metrics)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return maps


class IntegratedGradients(_EngineExplainer):
    """Integrated Gradients: (x - baseline) x the path integral of gradients from the baseline."""

    def __init__(
        self,
        n_steps: int = 32,
        method: str = "gausslegendre",
        baseline: str | float = "zeros",
        blur_sigma: float = BLUR_SIGMA,
        seed: int = 0,
        *,
        engine: EngineOptions | None = None,
    ) -> None:
        """:param n_steps: integration points. :param method: ``gausslegendre`` or a
        Riemann rule (``riemann_left|right|middle|trapezoid``). :param baseline:
        ``zeros``, ``blurred``, ``uniform``, ``mean`` or a grey value. :param seed: the
        seed of a random (``uniform``) baseline. :param engine: the execution options
        (:class:`~doll_core.attribution.engine.EngineOptions`); its ``completeness`` and
        ``completeness_every`` say on which calls the completeness delta (two forward
        passes of the batch) goes into ``last_delta`` and :meth:`performance_report`."""
        if method not in METHODS:
            raise DollError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if n_steps < 1:
            raise DollError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps, self.method = n_steps, method
        self.baseline = check_baseline(baseline)
        self.blur_sigma, self.seed = blur_sigma, seed
        super().__init__(engine)
        #: completeness delta of the last call, ``[B, T]``: sum of the attribution minus
        #: (logit at the image - logit at the baseline); 0 where the target is -1
        self.last_delta: torch.Tensor | None = None
        #: running sums over every explained target: |delta|, |gain| and the count
        self._completeness_sums = [0.0, 0.0, 0]

    def attribute(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """images ``[B, C, H, W]``, targets ``long [B, T]`` (-1 = none) -> ``[B, T, H, W]``;
        records the completeness delta in ``last_delta`` (on the calls it is measured)."""
        maps = super().attribute(model, images, targets)
        _, calls = self._models[id(model)]
        if not self.options.completeness or (calls - 1) % self.options.completeness_every:
            return maps
        baseline = make_baseline(images, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed)
        self.last_delta, gain = self._delta(model, images, baseline, targets, maps)
        explained = targets >= 0
        self._completeness_sums[0] += float(self.last_delta.abs()[explained].sum())
        self._completeness_sums[1] += float(gain.abs()[explained].sum())
        self._completeness_sums[2] += int(explained.sum())
        return maps

    def performance_report(self) -> dict[str, Any]:
        """The engine's report plus the completeness of the maps so far: mean |delta| and
        mean |logit(image) - logit(baseline)| over every explained target, and their ratio
        (how far the integral is from exact: more steps lower it)."""
        report = super().performance_report()
        delta, gain, count = self._completeness_sums
        report["completeness"] = (
            {
                "maps": count,
                "mean_abs_delta": delta / count,
                "mean_abs_gain": gain / count,
                "relative_delta": delta / gain if gain > 0 else None,
            }
            if count
            else None
        )
        return report

    def _maps(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, options: EngineOptions
    ) -> torch.Tensor:
        baseline = make_baseline(images, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed)
        step_sizes_fn, alphas_fn = approximation_parameters(self.method)
        alphas = torch.tensor(alphas_fn(self.n_steps), dtype=images.dtype, device=images.device)
        step_sizes = torch.tensor(step_sizes_fn(self.n_steps), dtype=torch.float32)
        difference = images - baseline

        def rows(chunk: torch.Tensor, index: torch.Tensor, samples: slice) -> torch.Tensor:
            a = alphas[samples].view(1, -1, 1, 1, 1)
            path = baseline[index][:, None] + a * difference[index][:, None]
            return path.reshape(-1, *images.shape[1:])

        grads = slot_gradients(
            model,
            images,
            targets,
            self.n_steps,
            rows,
            sample_weights=step_sizes,
            options=options,
        )
        return (difference[:, None].float() * grads).sum(dim=2)

    @staticmethod
    @torch.no_grad()
    def _delta(
        model: nn.Module,
        images: torch.Tensor,
        baseline: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (delta, gain), both ``[B, T]``: the attribution's sum minus the logit gain,
        and the gain itself; 0 where the target is -1."""
        was_training = model.training
        model.eval()
        try:
            gain = (model(images) - model(baseline)).float()
        finally:
            model.train(was_training)
        expected = gain.gather(1, targets.clamp(min=0)) * (targets >= 0)
        return maps.sum(dim=(2, 3)) - expected, expected


class Saliency(_EngineExplainer):
    """Saliency: the (absolute) gradient of the target logit, summed over channels."""

    def __init__(
        self,
        abs: bool = True,
        *,
        engine: EngineOptions | None = None,
    ) -> None:
        self.abs = abs
        super().__init__(engine)

    def _maps(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, options: EngineOptions
    ) -> torch.Tensor:
        grads = slot_gradients(
            model,
            images,
            targets,
            1,
            lambda x, i, s: x,
            transform=torch.abs if self.abs else None,
            options=options,
        )
        return grads.sum(dim=2)


class InputXGradient(_EngineExplainer):
    """Input x Gradient: the image times the gradient of the target logit."""

    def __init__(
        self,
        *,
        engine: EngineOptions | None = None,
    ) -> None:
        super().__init__(engine)

    def _maps(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, options: EngineOptions
    ) -> torch.Tensor:
        grads = slot_gradients(model, images, targets, 1, lambda x, i, s: x, options=options)
        return (images[:, None].float() * grads).sum(dim=2)


class SmoothGrad(_EngineExplainer):
    """SmoothGrad: the mean (absolute) gradient over noisy copies of the image."""

    def __init__(
        self,
        n_samples: int = 16,
        stdev: float = 0.15,
        seed: int = 0,
        abs: bool = True,
        *,
        engine: EngineOptions | None = None,
    ) -> None:
        """:param stdev: noise standard deviation in image units ([0, 1] images).
        :param seed: the noise seed (the same seed gives captum's NoiseTunnel noise)."""
        if n_samples < 1 or stdev < 0:
            raise DollError("n_samples must be >= 1 and stdev >= 0")
        self.n_samples, self.stdev, self.seed, self.abs = n_samples, stdev, seed, abs
        super().__init__(engine)

    def _maps(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, options: EngineOptions
    ) -> torch.Tensor:
        batch = images.shape[0]
        generator = torch.Generator().manual_seed(self.seed)
        # drawn like captum's NoiseTunnel: one normal tensor, image-major
        std = torch.full((batch * self.n_samples, *images.shape[1:]), float(self.stdev))
        noise = torch.normal(0.0, std, generator=generator).to(images)
        noise = noise.view(batch, self.n_samples, *images.shape[1:])

        def rows(chunk: torch.Tensor, index: torch.Tensor, samples: slice) -> torch.Tensor:
            noisy = chunk[:, None] + noise[index, samples]
            return noisy.reshape(-1, *images.shape[1:])

        weights = torch.full((self.n_samples,), 1.0 / self.n_samples)
        grads = slot_gradients(
            model,
            images,
            targets,
            self.n_samples,
            rows,
            sample_weights=weights,
            transform=torch.abs if self.abs else None,
            options=options,
        )
        return grads.sum(dim=2)
