"""Explainer evaluation: classifiers x explainers x metric plugins on images with
ground truth, summarised as a leaderboard (``doll evaluate``, an experiment's
``[evaluation]``)."""
