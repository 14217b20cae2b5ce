"""Experiments: TOML files, the stage runner with its cache, ablation grids, reports."""
