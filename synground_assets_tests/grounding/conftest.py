"""Fixtures of the learning core: a tiny random BLIP and shapes-world triplets."""

from __future__ import annotations

import pytest
import torch

from synground_assets.adapters.grounding_blip import BlipGroundingModel
from synground_assets.grounding.data import Triplet
from synground_assets.records import evaluation_sets as benchmarks
from synground_assets.tiny.grounding import build_tiny_blip


def shapes_triplets(count: int, first_seed: int, size: int = 64, oracle_boxes: bool = False) -> list[Triplet]:
    """Triplets of `count` shapes images: detector boxes, or the renderer's true boxes."""
    seeds = [first_seed + i for i in range(count)]
    return benchmarks.shapes_triplets([f"shapes:{s}" for s in seeds], seeds, size, oracle_boxes)


@pytest.fixture(scope="session")
def tiny_blip_folder(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"), seed=0)


@pytest.fixture
def tiny_model(tiny_blip_folder) -> BlipGroundingModel:
    torch.manual_seed(0)
    return BlipGroundingModel.from_pretrained(tiny_blip_folder).eval()
