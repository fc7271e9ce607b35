"""Every `SYNGROUND_*` environment variable this package reads, read here and nowhere else.

Each is read when asked (not at import), so a test's `monkeypatch.setenv` and a worker's own
environment apply. The Dagster resources (`resources/__init__.py`) and the few entry points that run
outside Dagster (the torchrun job, the CLI) turn them into the paths and values the stages receive;
a stage never reads the environment itself. Checking a value (and the error naming the variable and
its fix) stays with the module that uses it.

    SYNGROUND_HOME              the project's local state (default: the working directory)
    SYNGROUND_DATA              the data root (default: <home>/data)
    SYNGROUND_LINEAGE           the lineage index (default: <data root>/lineage.duckdb)
    SYNGROUND_STAGING_MAX_AGE_S when an unpublished staging folder counts as abandoned
    SYNGROUND_RECIPES           the recipe file (default: the built-in recipes.yaml)
    SYNGROUND_TINY_MODELS       the tiny-model cache (default: ~/.cache/synground/tiny)
    SYNGROUND_BENCHMARKS_ROOT   a folder holding each evaluation set's files under its name
    SYNGROUND_PROFILE           local (default) or scale (ops/scale/profile.py)
    SYNGROUND_SHARDS_PER_RUN    the most shards one run of a backfill covers
    SYNGROUND_TORCH_THREADS     each training rank's torch threads
    SYNGROUND_MAX_RELAUNCHES    how often the lost_retries sensor relaunches a chain of runs (relaunch.py)
    SYNGROUND_RELAUNCH_INTERVAL_S  the lost_retries sensor's interval
    SYNGROUND_PG_OUTAGE_S       how long a process waits out a PostgreSQL outage (ops/scale/postgres.py)
    SYNGROUND_PG_BIN, SYNGROUND_SANDBOX_KEEP  the test services' sandbox (devtools/sandbox.py)
    SYNGROUND_LAUNCHER_PID      set by the training launcher for torchrun's ranks (ops/launcher.py), not by users
"""

from __future__ import annotations

import os

LAUNCHER_PID_ENV = "SYNGROUND_LAUNCHER_PID"  # torchrun's pid, for its ranks (set by the launcher)


def _read(name: str) -> str | None:
    """The variable's value; unset and empty both mean 'not set'."""
    return os.environ.get(name) or None


def home() -> str | None:
    return _read("SYNGROUND_HOME")


def data_root() -> str | None:
    return _read("SYNGROUND_DATA")


def lineage_path() -> str | None:
    return _read("SYNGROUND_LINEAGE")


def staging_max_age_s() -> str | None:
    return _read("SYNGROUND_STAGING_MAX_AGE_S")


def recipes_file() -> str | None:
    return _read("SYNGROUND_RECIPES")


def tiny_models() -> str | None:
    return _read("SYNGROUND_TINY_MODELS")


def benchmarks_root() -> str | None:
    return _read("SYNGROUND_BENCHMARKS_ROOT")


def profile() -> str | None:
    return _read("SYNGROUND_PROFILE")


def shards_per_run() -> str | None:
    return _read("SYNGROUND_SHARDS_PER_RUN")


def torch_threads() -> str:
    """Stripped; empty when unset."""
    return os.environ.get("SYNGROUND_TORCH_THREADS", "").strip()


def launcher_pid() -> str | None:
    return _read(LAUNCHER_PID_ENV)


def max_relaunches() -> str | None:
    return _read("SYNGROUND_MAX_RELAUNCHES")


def relaunch_interval_s() -> str | None:
    return _read("SYNGROUND_RELAUNCH_INTERVAL_S")


def pg_outage_s() -> str | None:
    return _read("SYNGROUND_PG_OUTAGE_S")


def pg_bin() -> str | None:
    return _read("SYNGROUND_PG_BIN")


def sandbox_keep() -> str | None:
    return _read("SYNGROUND_SANDBOX_KEEP")
