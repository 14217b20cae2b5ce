"""Attribution: the multi-target engine, :func:`explain`, target selection,
post-processing of maps into labels, and the checks on explainer results."""

from doll_core.attribution.api import check_attributions, explain

__all__ = ["check_attributions", "explain"]
