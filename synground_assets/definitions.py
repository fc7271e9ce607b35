"""The code location: gathers assets, resources, jobs and schedules; defines nothing itself."""

from __future__ import annotations

import dagster as dg

from synground_assets.assets.boxes import boxes
from synground_assets.assets.concepts import concepts
from synground_assets.assets.descriptions import descriptions
from synground_assets.assets.images import images
from synground_assets.assets.phrases import phrases
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource

GENERATION_ASSETS = [concepts, descriptions, images, phrases, boxes]

generation_job = dg.define_asset_job(
    "generation", selection=dg.AssetSelection.assets(*GENERATION_ASSETS), partitions_def=None
)

defs = dg.Definitions(
    assets=GENERATION_ASSETS,
    resources={"store": StoreResource(), "lineage": LineageResource(), "models": ModelSuiteResource()},
)
