"""Readers for the grounding data users already have, and writers for the formats other tools read.

Framework-free (no Dagster import): assets call these functions. Readers return
`common.ReadResult` (queries plus what was skipped and why); writers take the triplet table.
"""

from synground_assets.datasets.common import DatasetError, GroundingQuery, ReadResult, Skipped
from synground_assets.datasets.exports import (
    CocoInfo,
    ExportCounts,
    queries_to_triplets,
    write_amc_grounding,
    write_coco_grounding,
    write_odvg,
)
from synground_assets.datasets.flickr30k import read_flickr30k_entities
from synground_assets.datasets.refcoco import read_refcoco
from synground_assets.datasets.release import verify_manifest
from synground_assets.datasets.visual_genome import read_visual_genome

__all__ = [
    "CocoInfo",
    "DatasetError",
    "ExportCounts",
    "GroundingQuery",
    "ReadResult",
    "Skipped",
    "queries_to_triplets",
    "read_flickr30k_entities",
    "read_refcoco",
    "read_visual_genome",
    "verify_manifest",
    "write_amc_grounding",
    "write_coco_grounding",
    "write_odvg",
]
