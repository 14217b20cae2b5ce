"""Built-in explainers: gradient methods on DoLL's multi-target engine, Grad-CAM,
occlusion, DeepLift (captum) and LRP (zennit)."""

from __future__ import annotations

from typing import Any

from doll_core import hookimpl
from doll_plugins.explainers.cams import GradCAM
from doll_plugins.explainers.deeplift import DeepLift
from doll_plugins.explainers.gradients import (
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from doll_plugins.explainers.lrp import LRP
from doll_plugins.explainers.perturbation import Occlusion


@hookimpl
def doll_register_explainers(register: Any) -> None:
    register("integrated_gradients", IntegratedGradients, engine="multi-target")
    register("saliency", Saliency, engine="multi-target")
    register("input_x_gradient", InputXGradient, engine="multi-target")
    register("smoothgrad", SmoothGrad, engine="multi-target")
    register("gradcam", GradCAM, engine="multi-target")
    register("occlusion", Occlusion, engine="multi-target (forward only)")
    register("deeplift", DeepLift, engine="captum, one call per target slot")
    register("lrp", LRP, engine="zennit, one forward for all targets")
