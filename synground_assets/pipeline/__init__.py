"""The pipeline stages as plain functions: recipe and inputs in, tables and results out (no Dagster)."""
