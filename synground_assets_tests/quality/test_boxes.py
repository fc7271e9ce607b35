"""Box filters: each removes what it should, records why, and leaves the rest re-ranked."""

import pandas as pd
import pytest
import torch

from synground_assets.quality.boxes import box_iou, filter_boxes
from synground_assets.quality.settings import QualitySettings

OFF = dict(min_box_score=0.0, min_box_area=0.0, max_box_area=1.0, cross_phrase_nms_iou=None, max_boxes_per_phrase=None)
SIZES = pd.DataFrame([("i", 100, 100)], columns=["item_id", "width", "height"])


def boxes(*rows) -> pd.DataFrame:
    """rows: (phrase index, rank, x0, y0, x1, y1, score) of item 'i'."""
    return pd.DataFrame([(f"i:p{p}:b{r}", f"i:p{p}", "i", x0, y0, x1, y1, s, r) for p, r, x0, y0, x1, y1, s in rows],
                        columns=["box_id", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score", "box_rank"])


def run(frame, **settings):
    return filter_boxes(frame, SIZES, QualitySettings(**{**OFF, **settings}))


def test_box_iou_matches_hand_computed_values():
    iou = box_iou(torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=torch.float64))
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0 and iou[1, 1] == 1
    assert torch.equal(iou, iou.T)


def test_everything_off_keeps_every_box():
    frame = boxes((0, 0, 0, 0, 100, 100, 0.01), (1, 0, 0, 0, 100, 100, 0.9))
    kept, removals = run(frame)
    assert len(kept) == 2 and removals == []


def test_confidence_floor_records_score_and_threshold():
    kept, removals = run(boxes((0, 0, 10, 10, 30, 30, 0.5), (1, 0, 40, 40, 70, 70, 0.7)), min_box_score=0.65)
    assert list(kept.box_id) == ["i:p1:b0"]
    (removal,) = removals
    assert ((removal.stage, removal.filter, removal.box_id, removal.phrase_id)
            == ("boxes", "min_box_score", "i:p0:b0", "i:p0"))
    assert (removal.value, removal.threshold) == (0.5, 0.65)


def test_area_bounds_drop_specks_and_whole_image_boxes():
    frame = boxes((0, 0, 0, 0, 2, 2, 0.9), (1, 0, 0, 0, 100, 99, 0.9), (2, 0, 10, 10, 50, 50, 0.9))
    kept, removals = run(frame, min_box_area=0.001, max_box_area=0.95)
    assert list(kept.phrase_id) == ["i:p2"]
    assert {(r.filter, r.box_id) for r in removals} == {("min_box_area", "i:p0:b0"), ("max_box_area", "i:p1:b0")}
    assert [r.value for r in removals if r.filter == "max_box_area"] == [pytest.approx(0.99)]


def test_cross_phrase_nms_keeps_the_better_scoring_pair_and_spares_one_phrases_own_boxes():
    frame = boxes((0, 0, 10, 10, 50, 50, 0.6),  # phrase 0 and phrase 1 on one box: phrase 1 scores higher
                  (1, 0, 11, 10, 50, 51, 0.8),
                  (1, 1, 12, 12, 50, 50, 0.5))  # phrase 1's own second box on it too: not NMS's business
    kept, removals = run(frame, cross_phrase_nms_iou=0.8)
    assert sorted(kept.box_id) == ["i:p1:b0", "i:p1:b1"]
    (removal,) = removals
    assert removal.filter == "cross_phrase_nms" and removal.box_id == "i:p0:b0" and removal.value >= 0.8
    assert "i:p1:b0" in removal.detail


def test_cross_phrase_nms_tie_keeps_the_first_phrase():
    kept, _ = run(boxes((10, 0, 10, 10, 50, 50, 0.7), (2, 0, 10, 10, 50, 50, 0.7)), cross_phrase_nms_iou=0.5)
    assert list(kept.phrase_id) == ["i:p2"]  # phrase 2 was named before phrase 10


def test_max_boxes_per_phrase_keeps_the_best_and_reranks():
    frame = boxes((0, 0, 0, 0, 10, 10, 0.5), (0, 1, 20, 20, 30, 30, 0.9), (0, 2, 40, 40, 50, 50, 0.7))
    kept, removals = run(frame, max_boxes_per_phrase=2)
    assert dict(zip(kept.box_id, kept.box_rank)) == {"i:p0:b1": 0, "i:p0:b2": 1}
    assert ([(r.filter, r.box_id, r.value, r.threshold) for r in removals]
            == [("max_boxes_per_phrase", "i:p0:b0", 3.0, 2.0)])


def test_removing_the_best_box_promotes_the_next():
    kept, _ = run(boxes((0, 0, 0, 0, 100, 100, 0.9), (0, 1, 10, 10, 30, 30, 0.8)), max_box_area=0.9)
    assert list(kept.box_rank) == [0] and list(kept.box_id) == ["i:p0:b1"]
