"""`protocol: amc` reproduces AMC's released evaluation: its map, bicubic upsampling, first maximum,
strict hit rules; `pixel-centre` stays as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synground_assets.grounding.gradcam import amc_evaluation_map, cross_attention_gradcam
from synground_assets.grounding.pointing_game import (
    PointingQuery,
    centre_point_baseline,
    evaluate_pointing_game,
    heatmap_point,
    pointing_protocol,
    score_heatmaps,
)
from synground_assets.records.evaluation_sets import DEFAULT_PROTOCOL, benchmark_protocol, benchmark_settings
from synground_assets_tests.grounding.conftest import shapes_triplets


def amc_refcoco_hit(point, box_xywh) -> bool:
    """AMC dataset/utils.py point_in_box, written as it is there."""
    x1, y1, w, h = box_xywh
    x, y = point
    return x > x1 and x < (x1 + w) and y > y1 and y < (y1 + h)


def test_amc_refcoco_rule_matches_the_hand_rule_on_every_pixel_around_the_box():
    hit = pointing_protocol("amc").hit
    for box_xywh in [(10, 20, 30, 40), (10.4, 20.6, 29.3, 5.2), (0, 0, 1, 1)]:
        x0, y0, w, h = box_xywh
        for x in range(0, 45):
            for y in range(0, 65):
                assert hit((x, y), (x0, y0, x0 + w, y0 + h)) == amc_refcoco_hit((x, y), box_xywh), (box_xywh, x, y)


@pytest.mark.parametrize(
    "point, amc, pixel_centre",
    [((10, 30), False, True), ((11, 30), True, True), ((39, 30), True, True), ((40, 30), False, False),
     ((20, 20), False, True), ((20, 59), True, True), ((20, 60), False, False)],
)
def test_boundary_pixels_differ_between_the_protocols(point, amc, pixel_centre):
    box_xyxy = (10, 20, 40, 60)  # COCO xywh (10, 20, 30, 40)
    assert pointing_protocol("amc").hit(point, box_xyxy) is amc
    assert pointing_protocol("pixel-centre").hit(point, box_xyxy) is pixel_centre


def test_amc_flickr_rule_is_strict_on_the_toolkits_inclusive_corners():
    # XML (1-based, inclusive) xmin=11 .. xmax=40 -> toolkit (0-based) 10 .. 39 -> project (10, ., 40, .)
    hit = benchmark_protocol("flickr30k_test", "amc").hit
    box_xyxy = (10, 20, 40, 60)
    assert [hit((x, 30), box_xyxy) for x in (10, 11, 38, 39)] == [False, True, True, False]


def test_paper_benchmarks_default_to_amc_and_shapes_to_pixel_centre():
    assert DEFAULT_PROTOCOL == {"refcoco+_testA": "amc", "refcoco+_testB": "amc", "flickr30k_test": "amc",
                                "shapes_test": "pixel-centre"}
    assert benchmark_settings("refcoco+_testA", {})["resolution"] == 384
    assert benchmark_settings("flickr30k_test", {})["resolution"] == 256
    with pytest.raises(ValueError, match="protocol: expected one of amc, pixel-centre"):
        benchmark_settings("shapes_test", {"shapes_test": {"protocol": "bilinear"}})


def test_amc_map_is_the_released_formula_on_a_planted_attention():
    torch.manual_seed(0)
    attention = torch.rand(2, 3, 4, 1 + 6 * 6)  # (B, heads, T, 1 + P)
    gradient = torch.randn(2, 3, 4, 1 + 6 * 6)
    attention[:, :, :, 1 + 2 * 6 + 5] = 50.0  # row 2, column 5
    gradient[:, :, :, 1 + 2 * 6 + 5] = 1.0
    attention[:, :, :, 0] = 1000.0  # the image [CLS] column is dropped
    text_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    cam = amc_evaluation_map(attention, gradient, text_mask, (6, 6))
    mask = text_mask.view(2, 1, -1, 1, 1)
    cams = attention[:, :, :, 1:].reshape(2, 3, -1, 6, 6) * mask
    grads = gradient[:, :, :, 1:].clamp(min=0).reshape(2, 3, -1, 6, 6) * mask
    assert torch.equal(cam, (cams * grads).mean(1).mean(1))
    assert [divmod(int(c.flatten().argmax()), 6) for c in cam] == [(2, 5), (2, 5)]
    # 80 px wide, 40 px high: column 5 of 6 is the right edge, row 2 of 6 the upper middle.
    x, y = heatmap_point(cam[0], (80, 40), "bicubic")
    assert x >= 80 * 5 // 6 and 40 * 2 // 6 <= y < 40 * 3 // 6 + 1


def test_amc_point_is_the_first_maximum_of_the_bicubic_upsampling():
    torch.manual_seed(1)
    heatmap = torch.rand(4, 4)
    full = F.interpolate(heatmap.view(1, 1, 4, 4), size=(30, 50), mode="bicubic").squeeze()
    y, x = (full == torch.max(full)).nonzero()[0]  # AMC's own line
    assert heatmap_point(heatmap, (50, 30), "bicubic") == (int(x), int(y))
    flat = torch.zeros(4, 4)  # a tie everywhere: the first pixel
    assert heatmap_point(flat, (50, 30), "bicubic") == (0, 0)


def test_amc_batched_map_is_the_single_map_scaled_by_the_token_share(tiny_model):
    triplets = shapes_triplets(2, 10, oracle_boxes=True)[:2]
    images = [t.load_image() for t in triplets]
    phrases = ["a red circle", "a blue square to the left of a green triangle"]
    batched = cross_attention_gradcam(tiny_model, tiny_model.preprocess(images, phrases), combine=amc_evaluation_map)
    padded = batched.cam.new_tensor(tiny_model.preprocess(images, phrases).attention_mask.shape[1])
    for i in range(2):
        inputs = tiny_model.preprocess(images[i : i + 1], phrases[i : i + 1])
        single = cross_attention_gradcam(tiny_model, inputs, combine=amc_evaluation_map).cam[0]
        assert torch.allclose(batched.cam[i], single * inputs.attention_mask.shape[1] / padded, atol=1e-7, rtol=1e-4)


def test_evaluation_and_baselines_take_the_protocol(tiny_model):
    triplets = shapes_triplets(6, 30, oracle_boxes=True)
    amc = evaluate_pointing_game(tiny_model, triplets, protocol="amc", batch_size=4)
    one_by_one = evaluate_pointing_game(tiny_model, triplets, protocol="amc", batch_size=1)
    assert [r.point_xy for r in amc.results] == [r.point_xy for r in one_by_one.results]
    queries = [PointingQuery([(30, 30, 34, 34)], (64, 64))]
    assert centre_point_baseline(queries, "pixel-centre").accuracy == 1.0  # (32, 32) inside
    assert centre_point_baseline([PointingQuery([(32, 30, 40, 40)], (64, 64))], "amc").accuracy == 0.0  # x == x0
    assert score_heatmaps([torch.zeros(2, 2)], queries, "amc").results[0].point_xy == (0, 0)
