"""The pointing game: edge convention, several boxes, ties, orientation, baselines, the model."""

from __future__ import annotations

import pytest
import torch

from synground_assets.grounding.pointing_game import (
    PointingQuery,
    centre_point_baseline,
    evaluate_pointing_game,
    heatmap_point,
    point_in_any_box,
    point_in_box,
    queries_of,
    random_point_baseline,
    score_heatmaps,
)
from synground_assets_tests.grounding.conftest import shapes_triplets


@pytest.mark.parametrize(
    "point, inside",
    [((2, 2), True), ((4, 4), True), ((5, 3), False), ((3, 5), False), ((1, 3), False), ((3, 1), False)],
)
def test_box_edges_x1_y1_are_exclusive(point, inside):
    assert point_in_box(point, (2, 2, 5, 5)) is inside


def test_fractional_boxes_use_the_pixel_centre():
    assert point_in_box((2, 0), (2.4, 0, 4, 1))  # centre 2.5 >= 2.4
    assert not point_in_box((2, 0), (2.6, 0, 4, 1))
    assert not point_in_box((3, 0), (0, 0, 3.5, 1))  # centre 3.5 is not < 3.5


def test_a_hit_in_any_of_several_boxes_counts():
    boxes = [(0, 0, 2, 2), (10, 10, 12, 12)]
    assert point_in_any_box((11, 10), boxes)
    assert not point_in_any_box((5, 5), boxes)


def test_ties_take_the_first_maximal_pixel_in_row_major_order():
    flat = torch.zeros(4, 6)
    assert heatmap_point(flat, (6, 4)) == (0, 0)
    peaks = torch.zeros(4, 6)
    peaks[1, 0] = peaks[0, 3] = peaks[3, 5] = 1.0
    assert heatmap_point(peaks, (6, 4)) == (3, 0)  # (column, row): row 0 comes first


def test_heatmap_is_upsampled_to_the_original_image_without_transposing():
    heatmap = torch.zeros(2, 4)  # 2 rows, 4 columns
    heatmap[1, 3] = 1.0
    x, y = heatmap_point(heatmap, (80, 40))  # patches of 20 x 20 pixels
    assert 60 <= x < 80 and 20 <= y < 40


def test_score_heatmaps_reports_each_query():
    heatmap = torch.zeros(2, 2)
    heatmap[0, 1] = 1.0
    queries = [PointingQuery([(10, 0, 20, 10)], (20, 20), "a", "left top"),
               PointingQuery([(0, 10, 10, 20)], (20, 20), "b", "left bottom")]
    result = score_heatmaps([heatmap, heatmap], queries)
    assert result.accuracy == 0.5 and result.hits == 1
    assert [(r.item_id, r.hit) for r in result.results] == [("a", True), ("b", False)]
    assert result.to_dict()["queries"] == 2


def test_baselines():
    queries = [PointingQuery([(40, 40, 60, 60)], (100, 100)), PointingQuery([(0, 0, 10, 10)], (100, 100)),
               PointingQuery([(0, 0, 100, 100)], (100, 100))]
    centre = centre_point_baseline(queries)
    assert [r.point_xy for r in centre.results] == [(50, 50)] * 3
    assert [r.hit for r in centre.results] == [True, False, True]
    first, second = random_point_baseline(queries, seed=3), random_point_baseline(queries, seed=3)
    assert [r.point_xy for r in first.results] == [r.point_xy for r in second.results]
    assert first.results[2].hit  # a box covering the image is always hit
    assert all(0 <= r.point_xy[0] < 100 and 0 <= r.point_xy[1] < 100 for r in first.results)


def test_evaluate_pointing_game_with_the_tiny_model(tiny_model):
    triplets = shapes_triplets(4, first_seed=500, oracle_boxes=True)
    tiny_model.train()
    result = evaluate_pointing_game(tiny_model, triplets, batch_size=3)
    assert tiny_model.training  # the mode it was in is restored
    assert len(result.results) == len(triplets)
    assert [r.item_id for r in result.results] == [t.item_id for t in triplets]
    assert all(0 <= r.point_xy[0] < 64 and 0 <= r.point_xy[1] < 64 for r in result.results)
    assert result.accuracy == pytest.approx(sum(r.hit for r in result.results) / len(triplets))
    higher = evaluate_pointing_game(tiny_model, triplets[:2], resolution=128)
    assert len(higher.results) == 2
    assert [q.image_size for q in queries_of(triplets)] == [(64, 64)] * len(triplets)
