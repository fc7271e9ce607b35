"""Detector ensembles: weighted box fusion per phrase, one vote per detector, a box kept only when
`min_agreeing` detectors propose it, and each removal saying who proposed the box."""

import pandas as pd
import pytest

from synground_assets.quality.ensemble import LINEAGE_COLUMNS, PROPOSAL_COLUMNS, cluster_phrase, fuse_proposals, iou
from synground_assets.quality.settings import EnsembleSettings

ITEM, PHRASE = "shapes:00000:0000", "shapes:00000:0000:p0"


def frame(rows):
    return pd.DataFrame([(d, PHRASE, ITEM, *box, s) for d, box, s in rows], columns=PROPOSAL_COLUMNS)


def test_iou_of_known_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no pixel


def test_agreeing_detectors_fuse_into_the_score_weighted_mean_box():
    proposals = frame([("a", (0, 0, 10, 10), 0.9), ("b", (2, 0, 12, 10), 0.3)])
    fused, lineage, removals = fuse_proposals(proposals, ["a", "b", "c"], EnsembleSettings(min_agreeing=2))
    assert not removals and len(fused) == 1
    box = fused.iloc[0]
    # x0 = (0.9 * 0 + 0.3 * 2) / 1.2; WBF's rescaled score: mean 0.6 x 2 boxes / 3 detectors.
    assert box.x0 == pytest.approx(0.5) and box.x1 == pytest.approx(10.5)
    assert box.score == pytest.approx(0.6 * 2 / 3) and box.box_rank == 0
    assert list(lineage.columns) == LINEAGE_COLUMNS
    assert sorted(lineage.detector) == ["a", "b"] and lineage.agreed.all() and (lineage.agreeing == 2).all()
    assert set(lineage.box_id) == {box.box_id}


def test_a_box_too_few_detectors_propose_is_removed_naming_them():
    proposals = frame([("a", (0, 0, 10, 10), 0.9), ("b", (1, 0, 11, 10), 0.8), ("c", (40, 40, 60, 60), 0.99)])
    fused, lineage, removals = fuse_proposals(proposals, ["a", "b", "c"], EnsembleSettings(min_agreeing=2))
    assert len(fused) == 1 and fused.x0.iloc[0] < 5
    (removal,) = removals
    assert (removal.filter, removal.value, removal.threshold) == ("ensemble_agreement", 1.0, 2.0)
    assert removal.detail.startswith("proposed by c only: 1 of 3 detectors") and removal.phrase_id == PHRASE
    assert removal.box_id in set(lineage.box_id) and removal.box_id not in set(fused.box_id)
    assert lineage.set_index("detector").agreed.to_dict() == {"a": True, "b": True, "c": False}


def test_a_detector_never_agrees_with_itself():
    # Two overlapping boxes of detector a: one vote, not two.
    proposals = frame([("a", (0, 0, 10, 10), 0.9), ("a", (1, 0, 11, 10), 0.8)])
    fused, _, removals = fuse_proposals(proposals, ["a", "b"], EnsembleSettings(min_agreeing=2))
    assert fused.empty and len(removals) == 2
    assert [len(c.members) for c in cluster_phrase([("a", (0, 0, 10, 10), 0.9), ("a", (1, 0, 11, 10), 0.8)], 0.5)] \
        == [1, 1]


def test_overlap_below_the_threshold_is_no_agreement():
    proposals = frame([("a", (0, 0, 10, 10), 0.9), ("b", (5, 0, 15, 10), 0.9)])  # IoU 1/3
    assert fuse_proposals(proposals, ["a", "b"], EnsembleSettings(min_agreeing=2, iou=0.5))[0].empty
    assert len(fuse_proposals(proposals, ["a", "b"], EnsembleSettings(min_agreeing=2, iou=0.3))[0]) == 1


def test_phrases_are_fused_apart():
    a = frame([("a", (0, 0, 10, 10), 0.9), ("b", (0, 0, 10, 10), 0.9)])
    b = a.assign(phrase_id="shapes:00000:0000:p1")
    fused, _, _ = fuse_proposals(pd.concat([a, b]), ["a", "b"], EnsembleSettings())
    assert sorted(fused.phrase_id) == [PHRASE, "shapes:00000:0000:p1"]
