"""The boxes stage: batched == one by one, no detections, a failing item, GLIGEN layouts,
unusable phrases, and the agreement model asked for only when there are boxes to judge."""

import dataclasses

import pandas as pd
import pytest

from synground_assets.pipeline.boxes import BOX_COLUMNS, BoxInputs, box_phrases
from synground_assets.pipeline.images import draw_images
from synground_assets.records.items import phrase_id
from synground_assets.roles.base import AdapterInfo
from synground_assets.tiny.shapes import object_phrase, parse_objects
from synground_assets_tests.pipeline.stand_ins import Suite, described, earlier_rows, same_frames, shapes, write_images


def phrase_table(texts: pd.DataFrame) -> pd.DataFrame:
    """A phrases table: every object a description names, kept."""
    rows = [(item, object_phrase(f"{colour} {shape}"), True, None)
            for item, text in zip(texts.item_id, texts.description) for colour, shape in parse_objects(text)]
    table = pd.DataFrame(rows, columns=["item_id", "phrase", "kept", "drop_reason"])
    table.insert(2, "phrase_index", table.groupby("item_id").cumcount())
    table.insert(0, "phrase_id", [phrase_id(i, j) for i, j in zip(table.item_id, table.phrase_index)])
    return table


@pytest.fixture
def shard(tmp_path) -> BoxInputs:
    """Images drawn by the shapes world, on disk, and their phrases."""
    texts = described()
    images = draw_images(shapes(), "00000", texts, Suite(), earlier_rows(pd.DataFrame(columns=["item_id", "phash"])))
    return BoxInputs(images=images.table, phrases=phrase_table(texts), image_folder=write_images(images, tmp_path))


def test_batched_boxes_equal_one_by_one(shard):
    batched = box_phrases(shapes(batch_sizes={"detector": 4}), "00000", shard, Suite())
    one_by_one = box_phrases(shapes(batch_sizes={"detector": 1}), "00000", shard, Suite())
    assert same_frames(batched.tables, one_by_one.tables) and same_frames(batched.lineage, one_by_one.lineage)
    table = batched.table
    assert list(table.columns) == BOX_COLUMNS and len(table) >= len(shard.phrases)  # shapes: every phrase found
    assert batched.counts["phrases_with_box"] == batched.counts["phrases"] == len(shard.phrases)
    assert (table.groupby("phrase_id").box_rank.min() == 0).all()
    assert len(batched.preview) == len(shard.images)  # fewer items than the preview's 8 tiles


class Detector:
    info = AdapterInfo("fake-detector", "fake")

    def __init__(self, fail_on=None):
        self.fail_on = fail_on

    def detect(self, images, phrases):
        if any(self.fail_on in ps for ps in phrases):
            raise RuntimeError("out of memory")
        return [[] for _ in images]


def test_no_detections_give_an_empty_table_and_a_zero_yield(shard):
    result = box_phrases(shapes(), "00000", shard, Suite(detector=Detector()))
    assert result.table.empty and list(result.table.columns) == BOX_COLUMNS
    assert result.lineage["shard_yields"].to_dict("records") == [{"boxes": 0, "phrases": len(shard.phrases),
                                                                  "phrases_with_box": 0}]
    assert result.counts["detected_boxes"] == 0 and not result.removals and not result.skipped
    assert result.info.adapter == "fake-detector"


def test_an_item_the_detector_fails_on_is_skipped_with_its_reason(shard):
    bad = shard.phrases.phrase[0]
    result = box_phrases(shapes(batch_sizes={"detector": 4}), "00000", shard, Suite(detector=Detector(fail_on=bad)))
    assert result.skipped == [(shard.phrases.item_id[0], "RuntimeError: out of memory")]


def test_gligen_boxes_are_the_layout_without_loading_a_detector(shard):
    # One box per phrase of an image, side by side (the cross-phrase NMS would drop overlapping ones).
    left = 40.0 * shard.phrases.phrase_index
    layout = shard.phrases[["item_id", "phrase"]].assign(x0=left, y0=2.0, x1=left + 30, y1=40.0)
    layout.loc[0, "phrase"] = layout.phrase[0].upper()  # matched case-insensitively
    layout = layout.drop(index=1)  # a phrase the layout does not hold gets no box
    suite = Suite()
    result = box_phrases(shapes(box_source="gligen"), "00000",
                         BoxInputs(shard.images, shard.phrases, shard.image_folder, layout), suite)
    assert "detector" not in suite.asked and result.info.adapter == "gligen-layout"
    assert set(result.table.phrase_id) == set(shard.phrases.phrase_id) - {shard.phrases.phrase_id[1]}
    drawn = layout.assign(phrase_id=shard.phrases.phrase_id)
    boxed = result.table.merge(drawn, on="phrase_id", suffixes=("", "_drawn"))
    assert len(boxed) == len(result.table)
    assert (boxed.x0 == boxed.x0_drawn).all() and (boxed.y1 == boxed.y1_drawn).all()
    assert (result.table.score == 1.0).all()


def test_an_unusable_kept_phrase_is_skipped_not_sent_to_the_detector(shard):
    phrases = shard.phrases.copy()
    phrases.loc[0, "phrase"] = " ... "
    result = box_phrases(shapes(), "00000", BoxInputs(shard.images, phrases, shard.image_folder), Suite())
    reason = f"phrase {phrases.phrase_id[0]} ' ... ': no letter or digit in the phrase"
    assert result.skipped == [(phrases.item_id[0], reason)]
    assert phrases.phrase_id[0] not in set(result.table.phrase_id)


class Judge:
    """An agreement model that is never to be used: the stage must not ask for it without boxes."""


def test_the_agreement_model_is_asked_for_only_when_boxes_remain(shard):
    suite = Suite(detector=Detector(), agreement_model=Judge())
    box_phrases(shapes(quality={"agreement": {"model": "tiny:blip-itm"}}), "00000", shard, suite)
    assert "agreement_model" not in suite.asked


def ensemble_of_shapes(count: int, **quality) -> tuple:
    """`count` shapes detectors, each corrupting half its boxes with its own seed (independent errors)."""
    spec = shapes().roles["detector"]
    return tuple((f"d{k}", dataclasses.replace(spec, options={"corrupt_fraction": 0.5, "corrupt_seed": k}))
                 for k in range(count))


def test_an_ensemble_keeps_boxes_enough_detectors_propose_and_records_who(shard):
    recipe = shapes(quality={"ensemble": {"min_agreeing": 2}}, ensemble=ensemble_of_shapes(3),
                    batch_sizes={"detector": 4})
    suite = Suite()
    result = box_phrases(recipe, "00000", shard, suite)
    one_by_one = box_phrases(dataclasses.replace(recipe, roles={**recipe.roles, "detector": dataclasses.replace(
        recipe.roles["detector"], batch_size=1)}), "00000", shard, Suite())
    assert same_frames(result.tables, one_by_one.tables) and same_frames(result.lineage, one_by_one.lineage)
    # Each detector built once, as one group of the box stage.
    assert suite.build_count == {("shapes", "detector"): 1, ("shapes", "detector", "d1"): 1,
                                 ("shapes", "detector", "d2"): 1}
    proposals = result.lineage["box_proposals"]
    table = result.table
    assert len(table) and list(table.columns) == BOX_COLUMNS
    for box in table.box_id:  # every kept box: proposed by at least two detectors, each named once
        proposed = proposals[proposals.box_id == box]
        assert len(proposed) >= 2 and proposed.detector.is_unique and proposed.agreed.all()
    removed = [r for r in result.removals if r.filter == "ensemble_agreement"]
    assert removed, "half of each detector's boxes are corrupted: some boxes have one detector only"
    for removal in removed:
        (proposer,) = proposals[proposals.box_id == removal.box_id].detector
        assert removal.value == 1.0 and removal.detail.startswith(f"proposed by {proposer} only")
        assert not proposals[proposals.box_id == removal.box_id].agreed.any()
    assert result.counts["detected_boxes"] == len(proposals)
    assert result.info.adapter == "ensemble" and [d["name"] for d in result.info.settings["detectors"]] == \
        ["d0", "d1", "d2"]


def test_crop_verification_records_a_verdict_per_box_and_removes_with_the_probabilities(shard, tiny_models):
    # The ITM head of the tiny shapes model judges each crop; margin 0: keep when P(match) >= 0.5.
    quality = {"verify": {"judge": "itm", "model": "tiny:blip-itm-shapes", "margin": 0.0, "batch_size": 3}}
    result = box_phrases(shapes(quality=quality), "00000", shard, Suite())
    verdicts = result.lineage["box_verdicts"]
    removed = {r.box_id: r for r in result.removals if r.filter == "verify_crop"}
    assert len(verdicts) == len(result.table) + len(removed)
    for row in verdicts.itertuples():
        assert row.kept == (row.p_yes >= row.p_no) == (row.box_id in set(result.table.box_id))
        if not row.kept:
            assert removed[row.box_id].value == pytest.approx(row.p_yes - row.p_no)
            assert f"P(yes) {row.p_yes:.4f}, P(no) {row.p_no:.4f}" in removed[row.box_id].detail


def test_an_ensemble_that_finds_nothing_gives_empty_tables(shard):
    spec = shapes().roles["detector"]
    blind = tuple((f"d{k}", dataclasses.replace(spec, options={"min_area": 10**6})) for k in range(2))
    result = box_phrases(shapes(ensemble=blind), "00000", shard, Suite())
    assert result.table.empty and list(result.table.columns) == BOX_COLUMNS
    assert result.lineage["box_proposals"].empty and not result.removals
    assert result.counts["detected_boxes"] == 0 and result.lineage["shard_yields"].phrases_with_box[0] == 0
