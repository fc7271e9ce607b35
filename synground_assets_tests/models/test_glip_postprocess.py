"""ATSS post-processing of the dot-product head (rpn/inference.py:592-835, csrc/cuda/ml_nms.cu)."""

from __future__ import annotations

import math

import pytest
import torch

from synground_assets.models.glip.anchors import BoxCoder
from synground_assets.models.glip.config import glip_tiny
from synground_assets.models.glip.postprocess import (
    box_iou_plus_one,
    label_scores,
    limit_detections,
    ml_nms,
    postprocess,
    select_level,
)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_label_scores_are_the_mean_of_sigmoids_in_column_label_minus_one():
    probs = torch.tensor([[0.9, 0.1, 0.5, 0.2]])
    scores = label_scores(probs, {1: [0, 1], 3: [2]}, num_classes=4)
    torch.testing.assert_close(scores, torch.tensor([[0.5, 0.0, 0.5, 0.0]]))


def test_iou_counts_plus_one_pixels():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # 10 x 10 = 100
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0]])  # overlap 5 x 10 = 50
    torch.testing.assert_close(box_iou_plus_one(a, b), torch.tensor([[50.0 / 150.0]]))


def test_nms_suppresses_only_the_same_label_and_only_strictly_above_the_threshold():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 8.0], [0.0, 0.0, 9.0, 9.0],
                          [0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 5.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6])
    labels = torch.tensor([1, 1, 2, 1, 1])
    # IoU(0, 1) = 90/100 > 0.6: suppressed by 3 (higher, identical) too; 2 has another label: kept;
    # IoU(3, 4) = 60/100 = 0.6, not > 0.6: kept.
    assert ml_nms(boxes, scores, labels, 0.6).tolist() == [2, 3, 4]


def test_limit_keeps_ties_at_the_kth_value():
    scores = torch.tensor([0.9, 0.5, 0.5, 0.1, 0.7])
    assert limit_detections(scores, 3).tolist() == [0, 1, 2, 4]
    assert limit_detections(scores, 10).tolist() == [0, 1, 2, 3, 4]


def level_inputs(probabilities, centerness_logits, regression=None):
    """A 1 x N level: token probabilities (N, T) as logits, centerness (1, 1, N)."""
    n = len(probabilities)
    logits = torch.tensor([[logit(p) for p in row] for row in probabilities])
    box = torch.zeros(4, 1, n) if regression is None else regression
    return box, torch.tensor(centerness_logits, dtype=torch.float32).view(1, 1, n), logits


def test_threshold_before_centerness_and_sqrt_of_the_product():
    config = glip_tiny(pre_nms_top_n=1000)
    box, center, logits = level_inputs([[0.06], [0.04], [0.5]], [-10.0, 10.0, 0.0])
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0]] * 3)
    boxes, scores, labels = select_level(config, BoxCoder(), box, center, logits, anchors, {1: [0]}, (50, 50))
    # Anchor 0 passes 0.05 on its score although its centerness nearly zeroes it; anchor 1 does not.
    expected = sorted([math.sqrt(0.06 * torch.sigmoid(torch.tensor(-10.0)).item()), math.sqrt(0.5 * 0.5)],
                      reverse=True)
    torch.testing.assert_close(scores, torch.tensor(expected), rtol=1e-4, atol=1e-6)
    assert labels.tolist() == [1, 1]


def test_pre_nms_top_n_ranks_by_score_times_centerness():
    config = glip_tiny(pre_nms_top_n=1)
    box, center, logits = level_inputs([[0.9], [0.6]], [-3.0, 3.0])
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 29.0, 29.0]])
    boxes, scores, _ = select_level(config, BoxCoder(), box, center, logits, anchors, {1: [0]}, (50, 50))
    assert boxes.tolist() == [[20.0, 20.0, 29.0, 29.0]]


def test_boxes_are_clipped_to_w_minus_one_and_h_minus_one():
    config = glip_tiny()
    box, center, logits = level_inputs([[0.9]], [0.0])
    anchors = torch.tensor([[-5.0, 30.0, 60.0, 70.0]])
    boxes, _, _ = select_level(config, BoxCoder(), box, center, logits, anchors, {1: [0]}, (40, 50))
    assert boxes.tolist() == [[0.0, 30.0, 49.0, 39.0]]


def test_postprocess_batches_levels_nms_and_sorts_by_score():
    config = glip_tiny(num_classes=3)
    # Two levels of one image, 2 tokens; label 1 -> token 0, label 2 -> token 1.
    b1, c1, l1 = level_inputs([[0.9, 0.8], [0.2, 0.3]], [0.0, 0.0])
    b2, c2, l2 = level_inputs([[0.95, 0.01]], [0.0])
    anchors = [torch.tensor([[0.0, 0.0, 9.0, 9.0], [30.0, 30.0, 39.0, 39.0]]), torch.tensor([[0.0, 0.0, 9.0, 8.0]])]
    out = postprocess(config, [b1[None], b2[None]], [c1[None], c2[None]], [l1[None], l2[None]], anchors,
                      [{1: [0], 2: [1]}], [(64, 64)])
    (det,) = out
    # Label 1: level-2 box (0.95) suppresses the level-1 box (0.9, IoU 0.9); label 2's box and both
    # labels' second-location boxes (0.2 / 0.3 > 0.05) stay.
    expected_scores = sorted([math.sqrt(x * 0.5) for x in (0.95, 0.8, 0.3, 0.2)], reverse=True)
    torch.testing.assert_close(det.scores, torch.tensor(expected_scores), rtol=1e-4, atol=1e-6)
    assert det.labels.tolist() == [1, 2, 2, 1]
    assert det.boxes_xyxy[0].tolist() == [0.0, 0.0, 9.0, 8.0]


def test_bad_positive_maps_are_refused_with_the_label():
    config = glip_tiny(num_classes=3)
    b, c, lg = level_inputs([[0.9, 0.8]], [0.0])
    args = (config, [b[None]], [c[None]], [lg[None]], [torch.tensor([[0.0, 0.0, 9.0, 9.0]])])
    with pytest.raises(ValueError, match="label 4 is outside 1..3"):
        postprocess(*args, [{4: [0]}], [(64, 64)])
    with pytest.raises(ValueError, match=r"token\(s\) \[7\]"):
        postprocess(*args, [{1: [7]}], [(64, 64)])


def test_an_empty_positive_map_gives_no_detections():
    config = glip_tiny(num_classes=3)
    b, c, lg = level_inputs([[0.9, 0.8]], [0.0])
    (det,) = postprocess(config, [b[None]], [c[None]], [lg[None]], [torch.tensor([[0.0, 0.0, 9.0, 9.0]])],
                         [{}], [(64, 64)])
    assert len(det) == 0 and det.boxes_xyxy.shape == (0, 4) and det.labels.dtype == torch.long
