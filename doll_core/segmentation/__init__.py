"""Segmentation: DoLL pre-training of whole models, fine-tuning with adapters, metrics."""
