"""Exports for other trainers: each format reads back to the boxed triplets that went in."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from synground_assets.datasets.exports import (
    ExportCounts,
    caption_with_spans,
    queries_to_triplets,
    read_amc_grounding,
    read_coco_grounding,
    read_odvg,
    write_amc_grounding,
    write_coco_grounding,
    write_odvg,
)
from synground_assets.datasets.visual_genome import read_visual_genome

NAN = math.nan
COLUMNS = ["item_id", "image_path", "width", "height", "description", "phrase_id", "phrase", "box_id",
           "x0", "y0", "x1", "y1", "score"]
KEY_COLUMNS = ["item_id", "image_path", "width", "height", "phrase", "x0", "y0", "x1", "y1"]
# Two items with boxes (one phrase has two boxes, one phrase has none) and one item with no box at all.
TRIPLETS = [
    ("s0-000", "shard-0/000.png", 64, 48, "a cat on a red couch", "p0", "a cat", "b0", 1.0, 2.0, 20.0, 30.0, 0.9),
    ("s0-000", "shard-0/000.png", 64, 48, "a cat on a red couch", "p1", "a red couch", "b1",
     0.0, 20.0, 64.0, 48.0, 0.8),
    ("s0-000", "shard-0/000.png", 64, 48, "a cat on a red couch", "p1", "a red couch", "b2",
     30.5, 25.25, 60.0, 47.0, 0.7),
    ("s0-000", "shard-0/000.png", 64, 48, "a cat on a red couch", "p2", "a lamp", None, NAN, NAN, NAN, NAN, NAN),
    ("s0-001", "shard-0/001.png", 32, 32, "A Dog sleeps", "p3", "a dog", "b3", 4.0, 4.0, 28.0, 28.0, 0.95),
    ("s0-002", "shard-0/002.png", 32, 32, "an empty room", "p4", "a chair", None, NAN, NAN, NAN, NAN, NAN),
]
EXPECTED_COUNTS = ExportCounts(images=2, phrases=3, boxes=4, phrases_without_box=2)


@pytest.fixture
def triplets() -> pd.DataFrame:
    return pd.DataFrame(TRIPLETS, columns=COLUMNS)


def boxed(triplets: pd.DataFrame) -> pd.DataFrame:
    return triplets.dropna(subset=["x0"]).reset_index(drop=True)


def assert_same_rows(read_back: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    pd.testing.assert_frame_equal(
        read_back[columns].reset_index(drop=True), expected[columns].reset_index(drop=True),
        check_dtype=False, check_exact=False,
    )


def assert_spans_mark_the_phrases(frame: pd.DataFrame) -> None:
    for row in frame.itertuples(index=False):
        (start, end), = row.tokens_positive
        assert row.caption[start:end].lower() == row.phrase.lower()


def test_coco_round_trip_through_pycocotools(triplets, tmp_path):
    path = tmp_path / "coco.json"
    assert write_coco_grounding(triplets, path) == EXPECTED_COUNTS
    read_back = read_coco_grounding(path)
    assert_same_rows(read_back, boxed(triplets), KEY_COLUMNS + ["phrase_id", "box_id", "score"])
    assert read_back["caption"].tolist() == ["a cat on a red couch"] * 3 + ["A Dog sleeps"]
    assert_spans_mark_the_phrases(read_back)


def test_coco_file_is_a_detection_file(triplets, tmp_path):
    from pycocotools.coco import COCO

    path = tmp_path / "coco.json"
    write_coco_grounding(triplets, path)
    coco = COCO(str(path))
    assert coco.getCatIds() == [1]
    first_image = coco.loadImgs(coco.getImgIds())[0]
    assert first_image["file_name"] == "shard-0/000.png" and first_image["item_id"] == "s0-000"
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[first_image["id"]]))
    assert [annotation["bbox"] for annotation in annotations] == [
        [1.0, 2.0, 19.0, 28.0], [0.0, 20.0, 64.0, 28.0], [30.5, 25.25, 29.5, 21.75],
    ]
    assert [annotation["area"] for annotation in annotations] == [19.0 * 28.0, 64.0 * 28.0, 29.5 * 21.75]
    assert {annotation["iscrowd"] for annotation in annotations} == {0}


def test_odvg_round_trip(triplets, tmp_path):
    path = tmp_path / "train.odvg.jsonl"
    assert write_odvg(triplets, path) == EXPECTED_COUNTS
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["filename"] for line in lines] == ["shard-0/000.png", "shard-0/001.png"]
    assert set(lines[0]) == {"filename", "height", "width", "grounding", "item_id"}
    assert lines[0]["grounding"]["regions"][0] == {"bbox": [1.0, 2.0, 20.0, 30.0], "phrase": "a cat",
                                                   "tokens_positive": [[0, 5]], "phrase_id": "p0"}
    read_back = read_odvg(path)
    assert_same_rows(read_back, boxed(triplets), KEY_COLUMNS)
    assert_spans_mark_the_phrases(read_back)


def test_amc_round_trip_groups_boxes_per_phrase(triplets, tmp_path):
    path = tmp_path / "amc.json"
    assert write_amc_grounding(triplets, path) == EXPECTED_COUNTS
    entries = json.loads(path.read_text())
    assert [(entry["image"], entry["caption"], len(entry["bbox"])) for entry in entries] == [
        ("shard-0/000.png", "a cat", 1), ("shard-0/000.png", "a red couch", 2), ("shard-0/001.png", "a dog", 1),
    ]
    assert entries[1]["bbox"] == [[0.0, 20.0, 64.0, 48.0], [30.5, 25.25, 60.0, 47.0]]
    assert_same_rows(read_amc_grounding(path), boxed(triplets), KEY_COLUMNS + ["phrase_id", "box_id"])


def test_caption_spans_are_case_insensitive_and_missing_phrases_are_appended():
    caption, spans = caption_with_spans("A Dog sleeps", ["a dog", "a mat"])
    assert caption == "A Dog sleeps. A mat"
    assert spans == {"a dog": [[0, 5]], "a mat": [[14, 19]]}
    assert caption_with_spans(NAN, ["a tree", "a car"]) == ("A tree. A car", {"a tree": [[0, 6]], "a car": [[8, 13]]})


def test_a_phrase_is_found_on_word_boundaries_not_inside_a_longer_word():
    caption, spans = caption_with_spans("A catamaran next to a cat.", ["a cat"])
    assert caption == "A catamaran next to a cat."
    assert spans == {"a cat": [[20, 25]]}
    assert caption[20:25] == "a cat"
    # Only inside a longer word: no occurrence, so the phrase is appended as a sentence of its own.
    assert caption_with_spans("A catamaran.", ["a cat"]) == ("A catamaran. A cat", {"a cat": [[13, 18]]})


def test_every_occurrence_of_a_phrase_is_a_span():
    caption, spans = caption_with_spans("A red ball, a blue cube and A RED BALL again", ["a red ball", "a blue cube"])
    assert spans == {"a red ball": [[0, 10], [28, 38]], "a blue cube": [[12, 23]]}
    assert all(caption[a:b].lower() == "a red ball" for a, b in spans["a red ball"])


@pytest.mark.parametrize("description", ["A yellow square.", "A yellow square", "A yellow square. ",
                                         "A yellow square,"])
def test_an_appended_phrase_is_joined_without_doubled_punctuation(description):
    caption, spans = caption_with_spans(description, ["a black line"])
    assert caption == "A yellow square. A black line"
    assert spans == {"a black line": [[17, 29]]}


def test_coco_tokens_positive_lists_every_occurrence(triplets, tmp_path):
    triplets["description"] = "a cat on a red couch near a cat"
    write_coco_grounding(triplets, tmp_path / "coco.json")
    annotations = json.loads((tmp_path / "coco.json").read_text())["annotations"]
    assert annotations[0]["phrase"] == "a cat" and annotations[0]["tokens_positive"] == [[0, 5], [26, 31]]
    odvg = read_odvg_after(write_odvg, triplets, tmp_path)
    assert odvg.tokens_positive.iloc[0] == [[0, 5], [26, 31]]


def read_odvg_after(writer, triplets, tmp_path):
    writer(triplets, tmp_path / "x.jsonl")
    return read_odvg(tmp_path / "x.jsonl")


def test_the_same_phrase_text_twice_in_one_image_stays_two_labels(triplets, tmp_path):
    from synground_assets.datasets.hub_formats import samples

    triplets.loc[2, ["phrase_id", "phrase"]] = ["p9", "a cat"]  # a second "a cat" with its own box
    odvg = read_odvg_after(write_odvg, triplets, tmp_path)
    cats = odvg[odvg.phrase == "a cat"]
    assert sorted(cats.phrase_id) == ["p0", "p9"]
    first = samples(triplets)[0]
    assert first["phrases"].count("a cat") == 2
    assert sorted(p for p, t in zip(first["phrase_ids"], first["phrases"]) if t == "a cat") == ["p0", "p9"]
    write_amc_grounding(triplets, tmp_path / "amc.json")
    amc = json.loads((tmp_path / "amc.json").read_text())
    assert sorted(e["phrase_id"] for e in amc if e["caption"] == "a cat") == ["p0", "p9"]


def test_coco_file_has_info_licences_and_segmentation_that_pycocotools_reads(triplets, tmp_path):
    from pycocotools.coco import COCO

    from synground_assets.datasets.exports import CocoInfo

    info = CocoInfo("test release", "7", "tests", "2026-01-02T03:04:05+00:00", "apache-2.0", url="https://x.test")
    write_coco_grounding(triplets, tmp_path / "coco.json", info)
    coco = COCO(str(tmp_path / "coco.json"))
    assert coco.dataset["info"] == {"description": "test release", "url": "https://x.test", "version": "7",
                                    "year": 2026, "contributor": "tests", "date_created": "2026-01-02T03:04:05+00:00"}
    assert coco.dataset["licenses"] == [{"id": 1, "name": "apache-2.0", "url": ""}]
    assert coco.dataset["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert {image["license"] for image in coco.dataset["images"]} == {1}
    for annotation in coco.dataset["annotations"]:
        x, y, w, h = annotation["bbox"]
        assert annotation["segmentation"] == [[x, y, x, y + h, x + w, y + h, x + w, y]]
        assert annotation["area"] == pytest.approx(w * h) and annotation["iscrowd"] == 0
        # The polygon is a real segment: its mask covers the box (pixel grid rounding aside).
        assert coco.annToMask(annotation).sum() == pytest.approx(w * h, rel=0.25)


def test_boxes_past_the_edge_within_the_tolerance_are_clipped_to_the_image(triplets, tmp_path):
    from synground_assets.datasets.hub_formats import samples

    triplets.loc[0, ["x0", "y0", "x1", "y1"]] = [-0.5, -1.0, 64.5, 48.9]  # a 64x48 image
    write_coco_grounding(triplets, tmp_path / "coco.json")
    annotation = json.loads((tmp_path / "coco.json").read_text())["annotations"][0]
    assert annotation["bbox"] == [0.0, 0.0, 64.0, 48.0] and annotation["area"] == 64.0 * 48.0
    assert read_odvg_after(write_odvg, triplets, tmp_path).loc[0, ["x0", "y0", "x1", "y1"]].tolist() == [0, 0, 64, 48]
    assert samples(triplets)[0]["boxes"][0] == [0.0, 0.0, 64.0, 48.0]


@pytest.mark.parametrize("writer", [write_coco_grounding, write_odvg, write_amc_grounding])
def test_writes_leave_no_temporary_file(triplets, tmp_path, writer):
    writer(triplets, tmp_path / "out" / "export.json")
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["export.json"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_path": "/data/000.png"}, "must be relative to the images root"),
        ({"image_path": "../000.png"}, "must be relative to the images root"),
        ({"x1": 90.0}, r"box_id='b0'.*box outside its image"),
        ({"x1": NAN}, "box_id 'b0' has some but not all coordinates"),
        ({"phrase": ""}, "is not a non-empty text"),
        ({"width": NAN}, "image size nanx48 is not positive"),
    ],
)
def test_bad_rows_are_refused_with_their_box_id(triplets, tmp_path, change, message):
    for column, value in change.items():
        triplets.loc[0, column] = value
    with pytest.raises(ValueError, match=message):
        write_odvg(triplets, tmp_path / "x.jsonl")


def test_missing_columns_are_named(triplets, tmp_path):
    with pytest.raises(ValueError, match=r"lack the columns \['score'\]"):
        write_coco_grounding(triplets.drop(columns=["score"]), tmp_path / "x.json")


def test_visual_genome_triplets_export_to_odvg(vg_root, tmp_path):
    images_root = vg_root / "images"
    result = read_visual_genome(vg_root / "region_descriptions.json", images_root, vg_root / "image_data.json")
    triplets = queries_to_triplets(result.queries, images_root)
    assert triplets.columns.tolist() == COLUMNS
    assert triplets["image_path"].tolist() == ["VG_100K/1.jpg", "VG_100K_2/2.jpg"]
    write_odvg(triplets, tmp_path / "vg.jsonl")
    read_back = read_odvg(tmp_path / "vg.jsonl")
    assert_same_rows(read_back, triplets, KEY_COLUMNS)
    # No description: the caption is made of the phrases, so each region still has a span.
    assert read_back["caption"].tolist() == ["A red ball", "A tree"]


def test_image_size_is_read_from_the_file_when_the_dataset_has_none(vg_root):
    images_root = vg_root / "images"
    result = read_visual_genome(vg_root / "region_descriptions.json", images_root)
    triplets = queries_to_triplets(result.queries[:1], images_root)
    assert (triplets.loc[0, "width"], triplets.loc[0, "height"]) == (40, 40)


def test_box_without_score_is_written_as_null(triplets, tmp_path):
    triplets.loc[0, "score"] = NAN
    write_coco_grounding(triplets, tmp_path / "coco.json")
    annotations = json.loads((tmp_path / "coco.json").read_text())["annotations"]
    assert [annotation["score"] for annotation in annotations] == [None, 0.8, 0.7, 0.95]
