"""Fixtures of the learning core: a tiny random BLIP and shapes-world triplets."""

from __future__ import annotations

import pytest
import torch

from synground_assets.grounding.data import Triplet
from synground_assets.roles.grounding_blip import BlipGroundingModel, build_tiny_blip
from synground_assets.roles.shapes import (
    ShapesConceptSampler,
    ShapesDescriber,
    ShapesDetector,
    ShapesImageGenerator,
    ShapesPhraseExtractor,
)


def shapes_triplets(count: int, first_seed: int, size: int = 64, oracle_boxes: bool = False) -> list[Triplet]:
    """Triplets of `count` shapes images: detector boxes, or the renderer's true boxes."""
    items = ShapesConceptSampler().sample([f"shapes:{first_seed + i}" for i in range(count)],
                                          [first_seed + i for i in range(count)])
    descriptions = ShapesDescriber().describe(items)
    generator, extractor, detector = ShapesImageGenerator(size), ShapesPhraseExtractor(), ShapesDetector()
    triplets = []
    for item, description in zip(items, descriptions):
        rendered = generator.render(description, item.seed)
        if oracle_boxes:
            pairs = rendered.ground_truth
        else:
            phrases = extractor.extract([description])[0]
            pairs = [(phrases[d.phrase_index], d.box_xyxy) for d in detector.detect([rendered.image], [phrases])[0]]
        triplets += [Triplet(rendered.image, phrase, [box], item.item_id) for phrase, box in pairs]
    return triplets


@pytest.fixture(scope="session")
def tiny_blip_folder(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"), seed=0)


@pytest.fixture
def tiny_model(tiny_blip_folder) -> BlipGroundingModel:
    torch.manual_seed(0)
    return BlipGroundingModel.from_pretrained(tiny_blip_folder).eval()
