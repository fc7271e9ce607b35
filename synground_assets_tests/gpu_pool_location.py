"""A code location for the dead-run test: one asset that takes a slot of the `gpu` pool, as
`finetuned_checkpoint` and `benchmark_scores` do, and holds it for `GPU_STEP_SECONDS` seconds
(the generation stages take no pool: their GPU limit is a run tag, see scale/run_tags.py)."""

import os
import time

import dagster as dg


@dg.asset(pool="gpu")
def gpu_step() -> None:
    time.sleep(float(os.environ.get("GPU_STEP_SECONDS", "0")))


defs = dg.Definitions(assets=[gpu_step])
