"""Orchestration: Dagster at the paper's partition count, the scale-out profile's launchers."""
