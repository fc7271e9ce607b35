"""Flickr30k Entities: one query per boxed phrase, every box of the entity, nothing dropped silently."""

from __future__ import annotations

import pytest

from synground_assets.datasets.common import DatasetError
from synground_assets.datasets.flickr30k import parse_sentence_line, read_flickr30k_entities


def queries_by_phrase(result):
    return {(query.source["sentence_index"], query.phrase): query for query in result.queries}


def test_one_query_per_boxed_phrase(flickr_root):
    result = read_flickr30k_entities(flickr_root, "test")
    assert sorted(queries_by_phrase(result)) == [
        (0, "A man"), (0, "an orange hat"), (1, "A man"), (1, "a boy"),
    ]
    query = queries_by_phrase(result)[(0, "an orange hat")]
    assert query.image_path == flickr_root / "flickr30k-images" / "1001.jpg"
    assert query.image_size == (80, 60)
    assert query.source["chain_id"] == "19"
    assert query.source["sentence"] == "A man in an orange hat starring at something ."


def test_object_with_two_names_gives_its_box_to_both_chains(flickr_root):
    queries = queries_by_phrase(read_flickr30k_entities(flickr_root, "test"))
    shared_box = (0.0, 0.0, 40.0, 60.0)
    assert queries[(1, "a boy")].boxes_xyxy == [shared_box]
    # Chain 18 owns the shared box and a box of its own: a hit in either counts.
    assert queries[(1, "A man")].boxes_xyxy == [shared_box, (50.0, 10.0, 80.0, 30.0)]


def test_one_based_inclusive_corners_become_zero_based_exclusive(flickr_root):
    # <xmin>11</xmin><ymin>3</ymin><xmax>20</xmax><ymax>10</ymax>: pixels 10..19 x 2..9, 0-based.
    queries = queries_by_phrase(read_flickr30k_entities(flickr_root, "test"))
    assert queries[(0, "an orange hat")].boxes_xyxy == [(10.0, 2.0, 20.0, 10.0)]


def test_phrases_without_box_are_skipped_and_counted_with_reasons(flickr_root):
    result = read_flickr30k_entities(flickr_root, "test")
    assert result.skipped_by_reason() == {
        "notvisual phrase": 1,
        "entity marked nobndbox": 1,
        "scene entity without box": 1,
        "entity has no object in the annotation file": 1,
    }
    notvisual = next(item for item in result.skipped if item.reason == "notvisual phrase")
    assert notvisual.where.endswith("1001.txt:1 [/EN#0 something]")


def test_phrase_markup_is_parsed_with_types_and_word_positions():
    sentence = parse_sentence_line("[/EN#23/people/bodyparts two hands] hold [/EN#5/other  a  cup ] .", "x", 1)
    assert sentence.text == "two hands hold a cup ."
    first, second = sentence.phrases
    assert (first.chain_id, first.types, first.text, first.first_word_index) == (
        "23", ("people", "bodyparts"), "two hands", 0)
    assert (second.chain_id, second.text, second.first_word_index) == ("5", "a cup", 3)


@pytest.mark.parametrize(
    "bad_line",
    [
        "[/EN#18/people A man in a hat .",          # unclosed
        "[/EN#x/people A man] in a hat .",          # chain id not a number
        "[EN#18/people A man] in a hat .",          # missing slash
        "[/EN#18/people ] in a hat .",              # no words
        "A man ] in a hat .",                       # stray bracket
    ],
)
def test_malformed_sentence_line_names_file_and_line(flickr_factory, bad_line):
    root = flickr_factory(sentences="[/EN#18/people A man] sits .\n" + bad_line + "\n")
    with pytest.raises(DatasetError, match=r"Sentences/1001\.txt:2: malformed phrase markup"):
        read_flickr30k_entities(root, "test")


def test_path_traversal_in_split_file_is_refused(flickr_factory):
    root = flickr_factory(split_lines="1001\n../x\n")
    with pytest.raises(DatasetError, match=r"test\.txt:2: '\.\./x' is not a Flickr30k image id"):
        read_flickr30k_entities(root, "test")


def test_missing_annotation_file_names_the_file(flickr_root):
    (flickr_root / "Annotations" / "1001.xml").unlink()
    with pytest.raises(DatasetError, match=r"Annotations/1001\.xml: annotation file not found\. Fix:"):
        read_flickr30k_entities(flickr_root, "test")


def test_missing_split_file_names_the_file(flickr_root):
    with pytest.raises(DatasetError, match=r"val\.txt: split file not found"):
        read_flickr30k_entities(flickr_root, "val")


def test_unknown_split_is_refused(flickr_root):
    with pytest.raises(DatasetError, match=r"choose one of \('train', 'val', 'test'\)"):
        read_flickr30k_entities(flickr_root, "testA")


def test_images_dir_can_live_elsewhere(flickr_root, tmp_path):
    elsewhere = tmp_path / "images"
    elsewhere.mkdir()
    (flickr_root / "flickr30k-images" / "1001.jpg").rename(elsewhere / "1001.jpg")
    with pytest.raises(DatasetError, match=r"flickr30k-images/1001\.jpg: image not found"):
        read_flickr30k_entities(flickr_root, "test")
    result = read_flickr30k_entities(flickr_root, "test", images_dir=elsewhere)
    assert {query.image_path for query in result.queries} == {elsewhere / "1001.jpg"}


def test_box_outside_its_image_names_the_object(flickr_factory, flickr_annotation):
    root = flickr_factory(annotation=flickr_annotation.replace("<xmax>80</xmax>", "<xmax>95</xmax>"))
    message = r"1001\.xml \[object 1\]: box outside its image: \(50, 10, 95, 30\) in a 80x60"
    with pytest.raises(DatasetError, match=message):
        read_flickr30k_entities(root, "test")


def test_object_without_name_and_broken_xml_are_errors(flickr_factory):
    root = flickr_factory(annotation="<annotation><size><width>80</width><height>60</height></size>"
                                     "<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox>"
                                     "</object></annotation>")
    with pytest.raises(DatasetError, match=r"\[object 0\]: <object> without a <name> chain id"):
        read_flickr30k_entities(root, "test")
    root = flickr_factory(annotation="<annotation>\n<size>\n</annotation>")
    with pytest.raises(DatasetError, match=r"1001\.xml:3:\d+: not valid XML"):
        read_flickr30k_entities(root, "test")
