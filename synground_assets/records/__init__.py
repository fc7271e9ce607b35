"""Data helpers: item ids and seeds, metadata previews, the evaluation sets of the pointing game,
the paper's table from MLflow."""
