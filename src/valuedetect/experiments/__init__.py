"""Experiments: a grid of runs from a TOML config, one record per run, and the report."""
