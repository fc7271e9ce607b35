"""The GradCAM overlay figure marks hits and misses by the score's own protocol."""

from __future__ import annotations

import pytest
import torch

from synground_assets.adapters.grounding_albef import AlbefGroundingModel
from synground_assets.grounding.pointing_game import evaluate_pointing_game, pointing_protocol
from synground_assets.grounding.visualize import gradcam_overlay
from synground_assets.tiny.grounding import build_tiny_albef
from synground_assets_tests.grounding.conftest import shapes_triplets

WHITE, RED = (255, 255, 255), (255, 0, 0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return AlbefGroundingModel.from_pretrained(build_tiny_albef(tmp_path_factory.mktemp("albef"))).eval()


@pytest.mark.parametrize("protocol", ["amc", "pixel-centre"])
def test_the_cross_colour_agrees_with_the_score(model, protocol):
    triplets = shapes_triplets(2, 40, oracle_boxes=True)[:4]
    scored = evaluate_pointing_game(model, triplets, protocol=protocol)
    for triplet, result in zip(triplets, scored.results):
        canvas = gradcam_overlay(model, triplet, None, pointing_protocol(protocol), tile=192)
        scale = 192 / triplet.load_image().width
        x, y = result.point_xy
        arm = (min(round(x * scale) + 5, 191), round(y * scale))  # on the cross's horizontal arm
        assert canvas.getpixel(arm) == (WHITE if result.hit else RED), (triplet.phrase, result)
