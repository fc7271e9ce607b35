"""Running the code location on many workers: the profile's settings, run tags from the recipe,
the Celery run launcher's worker side, and a command that launches many-run backfills."""
