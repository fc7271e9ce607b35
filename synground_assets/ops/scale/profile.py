"""The profile: how runs are cut and executed, chosen by environment variables.

- `SYNGROUND_PROFILE=local` (default, `make demo`): a backfill is one run (single-run policy), so
  `dagster asset materialize --partition-range` works and each model loads once per range; steps
  run in subprocesses (Dagster's default executor).
- `SYNGROUND_PROFILE=scale` (deploy/): a backfill is many runs of at most `SYNGROUND_SHARDS_PER_RUN`
  shards (default 8), which different workers execute, each run still loading its models once. A
  run executes in its worker's process (in-process executor): the worker owns one GPU, so its
  stages would take turns on that GPU anyway, and the worker keeps its imports and models warm
  from one run to the next. Dagster's CLI refuses partition ranges for many-run assets: in this
  profile, launch backfills from the UI, the schedule or `python -m synground_assets.ops.scale.backfill`.

Every process of a deployment (webserver, daemon, code server, workers) must see the same values.
"""

from __future__ import annotations

import dagster as dg

from synground_assets.config import settings

PROFILES = ("local", "scale")
DEFAULT_SHARDS_PER_RUN = 8


class ProfileError(ValueError):
    """A profile variable with a value this code location cannot use; the message names the fix."""


def profile() -> str:
    name = settings.profile() or "local"
    if name not in PROFILES:
        raise ProfileError(f"SYNGROUND_PROFILE={name!r}: expected one of {', '.join(PROFILES)} (unset means local)")
    return name


def shards_per_run() -> int:
    """K: the most shards one run of a backfill or of the missing-shards schedule covers."""
    value = settings.shards_per_run() or str(DEFAULT_SHARDS_PER_RUN)
    if not value.isdigit() or int(value) < 1:
        raise ProfileError(f"SYNGROUND_SHARDS_PER_RUN={value!r}: expected an integer >= 1, e.g. 8")
    return int(value)


def backfill_policy() -> dg.BackfillPolicy:
    if profile() == "scale":
        return dg.BackfillPolicy.multi_run(max_partitions_per_run=shards_per_run())
    return dg.BackfillPolicy.single_run()


def executor() -> dg.ExecutorDefinition | None:
    """The code location's executor: None keeps Dagster's default (multiprocess) on the local profile."""
    return dg.in_process_executor if profile() == "scale" else None
