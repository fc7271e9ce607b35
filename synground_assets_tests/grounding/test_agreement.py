"""Agreement scores: ITM probability per pair and the GradCAM mass share / lift per box."""

import pytest
import torch

from synground_assets.grounding.agreement import box_mass, score_agreement
from synground_assets.quality.agreement import agreement_filter
from synground_assets.quality.settings import AgreementSettings

from .conftest import shapes_triplets


def test_box_mass_is_the_share_of_the_map_inside_the_box():
    cam = torch.zeros(10, 10)
    cam[2:4, 5:8] = 1.0  # rows 2-3, columns 5-7
    cam[9, 9] = 2.0
    assert (box_mass(cam, [(5, 2, 8, 4), (0, 0, 5, 10), (9, 9, 10, 10), (0, 0, 10, 10)])
            == pytest.approx([0.75, 0, 0.25, 1]))


def test_scores_are_probabilities_and_shares_and_batching_does_not_change_them(tiny_model):
    triplets = shapes_triplets(3, first_seed=5)
    images = [t.load_image() for t in triplets]
    whole = [(0, 0, image.width, image.height) for image in images]
    boxes = [[t.boxes_xyxy[0], box] for t, box in zip(triplets, whole)]
    batched = score_agreement(tiny_model, images, [t.phrase for t in triplets], boxes, batch_size=8)
    single = score_agreement(tiny_model, images, [t.phrase for t in triplets], boxes, batch_size=1)
    for a, b in zip(batched, single):
        assert 0 <= a.itm_probability <= 1 and 0 <= a.box_mass[0] <= 1
        assert a.box_mass[1] == pytest.approx(1.0) and a.box_lift[1] == pytest.approx(1.0)  # the whole image
        assert a.box_has_peak[1]  # the whole image holds the peak
        assert a.itm_probability == pytest.approx(b.itm_probability, abs=1e-5)
        assert a.box_mass == pytest.approx(b.box_mass, abs=1e-4)


def test_agreement_filter_records_each_removal_and_keeps_the_rest(tiny_model):
    import pandas as pd

    triplets = shapes_triplets(1, first_seed=9)[:2]
    images = {f"i{k}": t.load_image() for k, t in enumerate(triplets)}
    rows = [(f"i{k}:p0:b0", f"i{k}:p0", f"i{k}", *t.boxes_xyxy[0], 1.0, 0) for k, t in enumerate(triplets)]
    frame = pd.DataFrame(rows, columns=["box_id", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score", "box_rank"])
    phrases = {f"i{k}:p0": t.phrase for k, t in enumerate(triplets)}
    kept, removals = agreement_filter(frame, phrases, images.__getitem__, tiny_model,
                                      AgreementSettings(min_itm_probability=0.0, min_box_mass_lift=0.0))
    assert len(kept) == 2 and removals == []
    kept, removals = agreement_filter(frame, phrases, images.__getitem__, tiny_model,
                                      AgreementSettings(min_itm_probability=1.0))
    assert (kept.empty and {r.filter for r in removals} == {"agreement_itm"}
            and all(r.threshold == 1.0 for r in removals))
    kept, removals = agreement_filter(frame, phrases, images.__getitem__, tiny_model,
                                      AgreementSettings(min_itm_probability=0.0, min_box_mass_lift=1e6))
    assert kept.empty and [r.box_id for r in removals] == ["i0:p0:b0", "i1:p0:b0"]
    assert all(r.filter == "agreement_box_mass_lift" and 0 <= r.value < 1e6 for r in removals)


def test_peak_outside_the_box_is_removed_when_required(tiny_model):
    import pandas as pd

    triplet = shapes_triplets(1, first_seed=4)[0]
    image = triplet.load_image()
    (score,) = score_agreement(tiny_model, [image], [triplet.phrase], [[(0, 0, image.width, image.height)]])
    corner = (0, 0, 1, 1)  # one pixel: the peak is there only by chance
    frame = pd.DataFrame([("i:p0:b0", "i:p0", "i", *corner, 1.0, 0)],
                         columns=["box_id", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score", "box_rank"])
    settings = AgreementSettings(min_itm_probability=0.0, min_box_mass_lift=0.0, require_peak_in_box=True)
    kept, removals = agreement_filter(frame, {"i:p0": triplet.phrase}, lambda _: image, tiny_model, settings)
    (peak,) = score_agreement(tiny_model, [image], [triplet.phrase], [[corner]])
    assert score.box_has_peak == [True]
    assert kept.empty != peak.box_has_peak[0]
    assert [r.filter for r in removals] == ([] if peak.box_has_peak[0] else ["agreement_peak_outside_box"])
