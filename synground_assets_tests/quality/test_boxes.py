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


# --- the filters equal, output for output, the pandas implementation they replaced -----------------


def reference_filter_boxes(boxes: pd.DataFrame, sizes: pd.DataFrame, settings: QualitySettings):
    """The box filters as first written (row-wise pandas, torch IoU): the reference the array version must equal."""
    import numpy as np

    from synground_assets.quality.removals import Removal

    removals = []

    def drop(frame, mask, name, measured, threshold):
        for row in frame[mask].itertuples(index=False):
            removals.append(Removal("boxes", row.item_id, name, float(getattr(row, measured)), float(threshold),
                                    row.phrase_id, row.box_id, f"{measured} {getattr(row, measured):.4g}"))
        return frame[~mask]

    def nms(frame, threshold):
        if frame.empty:
            return frame
        items, phrases, box_ids = (frame[c].to_numpy() for c in ("item_id", "phrase_id", "box_id"))
        scores, ranks = frame.score.to_numpy(), frame.box_rank.to_numpy()
        phrase_index = frame.phrase_id.str.rsplit(":p", n=1).str[-1].astype(int).to_numpy()
        coordinates = frame[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.float64)
        suppressed = []
        codes, uniques = pd.factorize(items)
        order = np.argsort(codes, kind="stable")
        for rows in np.split(order, np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1]):
            if len(set(phrases[rows])) < 2:
                continue
            ordered = rows[np.lexsort((ranks[rows], phrase_index[rows], -scores[rows]))]
            iou = box_iou(torch.from_numpy(coordinates[ordered])).numpy()
            alive = [True] * len(ordered)
            for i, best in enumerate(ordered):
                if not alive[i]:
                    continue
                for j in range(i + 1, len(ordered)):
                    row = ordered[j]
                    if alive[j] and phrases[row] != phrases[best] and iou[i, j] >= threshold:
                        alive[j] = False
                        removals.append(Removal("boxes", items[row], "cross_phrase_nms", float(iou[i, j]), threshold,
                                                phrases[row], box_ids[row], f"IoU {float(iou[i, j]):.3f} with "
                                                f"{box_ids[best]} (score {scores[best]:.3f} >= {scores[row]:.3f})"))
                        suppressed.append(frame.index[row])
        return frame.drop(index=suppressed)

    frame = boxes.merge(sizes[["item_id", "width", "height"]], on="item_id", how="left")
    frame["area_fraction"] = (frame.x1 - frame.x0) * (frame.y1 - frame.y0) / (frame.width * frame.height)
    frame = drop(frame, frame.score < settings.min_box_score, "min_box_score", "score", settings.min_box_score)
    frame = drop(frame, frame.area_fraction < settings.min_box_area, "min_box_area", "area_fraction",
                 settings.min_box_area)
    frame = drop(frame, frame.area_fraction > settings.max_box_area, "max_box_area", "area_fraction",
                 settings.max_box_area)
    if settings.cross_phrase_nms_iou is not None:
        frame = nms(frame, settings.cross_phrase_nms_iou)
    if settings.max_boxes_per_phrase is not None:
        order = frame.sort_values(["phrase_id", "score", "box_rank"], ascending=[True, False, True])
        position = order.groupby("phrase_id").cumcount()
        over = pd.Series(False, index=frame.index)
        over[order.index[position >= settings.max_boxes_per_phrase]] = True
        frame = frame.assign(position=position.reindex(frame.index) + 1)
        frame = drop(frame, over, "max_boxes_per_phrase", "position", settings.max_boxes_per_phrase)
    kept = frame[list(boxes.columns)].copy()
    kept["box_rank"] = kept.sort_values(["score", "box_rank"], ascending=[False, True]).groupby("phrase_id").cumcount()
    return kept.sort_index().reset_index(drop=True), removals


def random_shard_boxes(seed: int, items: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Boxes as the stage builds them (its column types), with tied scores, overlapping phrases,
    specks and whole-image boxes; one item has no size (NaN area: no area bound applies)."""
    import numpy as np

    from synground_assets.pipeline.boxes import BOX_COLUMNS

    rng = np.random.default_rng(seed)
    rows, sizes = [], []
    for i in range(items):
        item, (width, height) = f"r:{i:04d}", rng.choice([(64, 64), (512, 384), (100, 80)])
        if i != 3:
            sizes.append((item, int(width), int(height)))
        for p in rng.permutation(int(rng.integers(1, 5))):
            for rank in range(int(rng.integers(0, 5))):
                if rng.random() < 0.4 and rows and rows[-1][2] == item:  # on the box of the row before
                    x0, y0, x1, y1 = (v + float(rng.integers(0, 3)) for v in rows[-1][3:7])
                else:
                    x0, y0 = float(rng.integers(0, width - 2)), float(rng.integers(0, height - 2))
                    x1, y1 = float(rng.integers(x0 + 1, width + 1)), float(rng.integers(y0 + 1, height + 1))
                score = float(rng.choice([0.1, 0.3, 0.3, 0.5, 0.9])) if rng.random() < 0.5 else float(rng.random())
                rows.append((f"{item}:p{p}:b{rank}", f"{item}:p{p}", item, x0, y0, x1, y1, score, rank))
    return pd.DataFrame(rows, columns=BOX_COLUMNS), pd.DataFrame(sizes, columns=["item_id", "width", "height"])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("settings", [
    dict(),  # the defaults
    dict(min_box_score=0.25, min_box_area=0.01, max_box_area=0.6, cross_phrase_nms_iou=0.3, max_boxes_per_phrase=1),
    dict(cross_phrase_nms_iou=None, max_boxes_per_phrase=2),
    OFF,
])
def test_filters_equal_the_reference_implementation(seed, settings):
    frame, sizes = random_shard_boxes(seed)
    quality = QualitySettings(**settings)
    kept, removals = filter_boxes(frame, sizes, quality)
    expected_kept, expected_removals = reference_filter_boxes(frame, sizes, quality)
    pd.testing.assert_frame_equal(kept, expected_kept)
    assert removals == expected_removals
    assert [type(r.value) for r in removals] == [type(r.value) for r in expected_removals]
    assert len(removals) or settings is OFF  # the shards do exercise the filters


def test_filters_equal_the_reference_on_no_boxes():
    from synground_assets.pipeline.boxes import BOX_COLUMNS

    empty = pd.DataFrame([], columns=BOX_COLUMNS)
    kept, removals = filter_boxes(empty, SIZES, QualitySettings())
    expected, _ = reference_filter_boxes(empty, SIZES, QualitySettings())
    pd.testing.assert_frame_equal(kept, expected)
    assert removals == []
