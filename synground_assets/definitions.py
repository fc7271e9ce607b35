"""The code location: gathers assets, resources, jobs and schedules; defines nothing itself."""

from __future__ import annotations

import dagster as dg

from synground_assets.assets.boxes import boxes
from synground_assets.assets.concepts import concepts
from synground_assets.assets.descriptions import descriptions
from synground_assets.assets.exports import exports
from synground_assets.assets.images import images
from synground_assets.assets.phrases import phrases
from synground_assets.assets.scoring import benchmark_scores
from synground_assets.assets.training import finetuned_checkpoint
from synground_assets.dead_runs import dead_runs_sensor
from synground_assets.ops.scale import profile
from synground_assets.relaunch import lost_retries_sensor
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource, TrackingResource
from synground_assets.schedules import generation_job, missing_shards_schedule

GENERATION_ASSETS = [concepts, descriptions, images, phrases, boxes]
LEARNING_ASSETS = [finetuned_checkpoint, benchmark_scores]

defs = dg.Definitions(
    assets=[*GENERATION_ASSETS, *LEARNING_ASSETS, exports],
    jobs=[generation_job],
    schedules=[missing_shards_schedule],
    sensors=[dead_runs_sensor, lost_retries_sensor],
    executor=profile.executor(),
    resources={
        "store": StoreResource(),
        "lineage": LineageResource(),
        "suite": ModelSuiteResource(),
        "tracking": TrackingResource(),
    },
)
