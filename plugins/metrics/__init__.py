"""Built-in explanation-quality metrics, batched over images and targets: faithfulness
(deletion, insertion, ABPC, ROAD, faithfulness correlation), randomisation (cascading
model-parameter randomisation, random logit), complexity (sparseness, entropy) and
localization (pointing game, hit rate, IoU, Dice, top-k intersection, relevance rank and
mass accuracy, pixel AUROC)."""

from __future__ import annotations

import inspect
from typing import Any

from doll_core import hookimpl
from doll_plugins.metrics.complexity import Entropy, Sparseness
from doll_plugins.metrics.faithfulness import (
    ABPC,
    ROAD,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
)
from doll_plugins.metrics.localization import (
    Dice,
    HitRate,
    IoU,
    PixelAUROC,
    PointingGame,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    TopKIntersection,
)
from doll_plugins.metrics.randomisation import CascadingRandomisation, RandomLogit

BUILT_IN_METRICS: dict[str, Any] = {
    "deletion": Deletion,
    "insertion": Insertion,
    "abpc": ABPC,
    "road": ROAD,
    "faithfulness_correlation": FaithfulnessCorrelation,
    "cascading_randomisation": CascadingRandomisation,
    "random_logit": RandomLogit,
    "sparseness": Sparseness,
    "entropy": Entropy,
    "pointing_game": PointingGame,
    "hit_rate": HitRate,
    "iou": IoU,
    "dice": Dice,
    "top_k_intersection": TopKIntersection,
    "relevance_rank_accuracy": RelevanceRankAccuracy,
    "relevance_mass_accuracy": RelevanceMassAccuracy,
    "pixel_auroc": PixelAUROC,
}


@hookimpl
def doll_register_metrics(register: Any) -> None:
    for name, factory in BUILT_IN_METRICS.items():
        definition = (inspect.getdoc(factory) or "").split("\n\n")[0]
        register(
            name,
            factory,
            description=" ".join(definition.split()),
            category=str(factory.category),
            higher_is_better=factory.higher_is_better,
            needs=sorted(factory.needs),
            reference=factory.reference,
        )
