"""Training stages: classifiers now, segmentation models later."""
