"""Metrics: classification (AUROC) and localisation of attribution maps."""

from doll_core.metrics.classification import auroc, masked_auroc_per_class

__all__ = ["auroc", "masked_auroc_per_class"]
