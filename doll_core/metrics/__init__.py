"""Metrics: classification (AUROC) now; localisation and segmentation scores join later."""

from doll_core.metrics.classification import auroc, masked_auroc_per_class

__all__ = ["auroc", "masked_auroc_per_class"]
