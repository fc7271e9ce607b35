"""RefCOCO+ from the refer toolkit's files: what the reader yields, and what it refuses."""

from __future__ import annotations

import os

import pytest

from synground_assets.datasets.common import DatasetError
from synground_assets.datasets.refcoco import read_refcoco

COCO_FILE_NAME = "COCO_train2014_000000000101.jpg"  # instances.json's file_name for image 101


def test_one_query_per_sentence_of_the_split(refcoco_files):
    data_dir, images_dir = refcoco_files
    result = read_refcoco(data_dir, images_dir, "testA")
    assert [query.phrase for query in result.queries] == ["man in red shirt", "left guy"]
    assert [query.query_id for query in result.queries] == ["7:70", "7:71"]
    assert result.skipped == []


def test_image_comes_from_instances_not_from_the_ref_file_name(refcoco_files):
    data_dir, images_dir = refcoco_files
    query = read_refcoco(data_dir, images_dir, "testA").queries[0]
    assert query.image_path == images_dir / COCO_FILE_NAME
    assert query.image_path.is_file()
    assert query.image_size == (64, 48)


def test_box_is_the_annotation_bbox_converted_from_xywh(refcoco_files):
    data_dir, images_dir = refcoco_files
    (testa_query, _), (testb_query,) = (read_refcoco(data_dir, images_dir, split).queries
                                        for split in ("testA", "testB"))
    assert testa_query.boxes_xyxy == [(4.5, 6.0, 24.5, 36.0)]
    assert testb_query.boxes_xyxy == [(30.0, 10.0, 64.0, 48.0)]
    assert testa_query.source["ann_id"] == 501 and testa_query.source["raw"] == "Man in RED shirt"


def test_unknown_split_names_the_splits_present(refcoco_files):
    data_dir, images_dir = refcoco_files
    with pytest.raises(DatasetError, match=r"no refs in split 'val'.*\['testA', 'testB'\]"):
        read_refcoco(data_dir, images_dir, "val")


class Explode:
    """A pickle payload that runs a shell command when unpickled by the unrestricted loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(refcoco_factory, tmp_path):
    marker = tmp_path / "pwned"
    data_dir, images_dir = refcoco_factory(refs=[Explode(marker)])
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p.*refused to load the global .*system"):
        read_refcoco(data_dir, images_dir, "testA")
    assert not marker.exists()


def test_damaged_pickle_is_a_clear_error(refcoco_factory):
    data_dir, images_dir = refcoco_factory()
    (data_dir / "refs(unc).p").write_bytes((data_dir / "refs(unc).p").read_bytes()[:40])
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: not a plain-data pickle"):
        read_refcoco(data_dir, images_dir, "testA")


def test_pickle_of_the_wrong_shape_names_the_entry(refcoco_factory, refs):
    del refs[1]["ann_id"]
    data_dir, images_dir = refcoco_factory(refs=refs)
    with pytest.raises(DatasetError, match=r"\[entry 1\]: ref misses \['ann_id'\]"):
        read_refcoco(data_dir, images_dir, "testA")


def test_ref_pointing_to_an_image_missing_from_instances(refcoco_factory, refs):
    refs[0]["image_id"] = 999
    data_dir, images_dir = refcoco_factory(refs=refs)
    with pytest.raises(DatasetError, match=r"\[ref_id 7\]: image_id 999 is not in .*instances\.json"):
        read_refcoco(data_dir, images_dir, "testA")


def test_missing_image_file_names_the_file_and_the_fix(refcoco_factory):
    data_dir, images_dir = refcoco_factory(with_image=False)
    message = rf"{COCO_FILE_NAME}: image of .*ref_id 7.* not found\. Fix: point images_dir"
    with pytest.raises(DatasetError, match=message):
        read_refcoco(data_dir, images_dir, "testA")


def test_path_traversal_in_instances_is_refused(refcoco_factory, instances, tmp_path):
    instances["images"][0]["file_name"] = "../x.jpg"
    (tmp_path / "x.jpg").write_bytes(b"")
    data_dir, images_dir = refcoco_factory(instances=instances)
    with pytest.raises(DatasetError, match=r"\[image 101\]: file name '\.\./x\.jpg' points outside"):
        read_refcoco(data_dir, images_dir, "testA")


def test_annotation_of_another_image_is_refused(refcoco_factory, instances):
    instances["annotations"][0]["image_id"] = 102
    data_dir, images_dir = refcoco_factory(instances=instances)
    with pytest.raises(DatasetError, match="ann_id 501 belongs to image 102, not 101"):
        read_refcoco(data_dir, images_dir, "testA")


def test_box_outside_its_image_names_the_annotation(refcoco_factory, instances):
    instances["annotations"][0]["bbox"] = [50.0, 6.0, 40.0, 10.0]
    data_dir, images_dir = refcoco_factory(instances=instances)
    with pytest.raises(DatasetError, match=r"\[annotation 501\]: box outside its image: \(50, 6, 90, 16\) in a 64x48"):
        read_refcoco(data_dir, images_dir, "testA")


def test_malformed_instances_json_names_the_line(refcoco_factory):
    data_dir, images_dir = refcoco_factory()
    (data_dir / "instances.json").write_text('{"images": [\n  {"id": 101,,}\n]}')
    with pytest.raises(DatasetError, match=r"instances\.json:2:\d+: not valid JSON"):
        read_refcoco(data_dir, images_dir, "testA")


def test_empty_sentence_is_skipped_and_counted(refcoco_factory, refs):
    refs[0]["sentences"][1]["sent"] = "  "
    data_dir, images_dir = refcoco_factory(refs=refs)
    result = read_refcoco(data_dir, images_dir, "testA")
    assert [query.query_id for query in result.queries] == ["7:70"]
    assert result.skipped_by_reason() == {"empty sentence": 1}
    assert "sent_id 71" in result.skipped[0].where


def test_ref_without_sentences_is_skipped_and_counted(refcoco_factory, refs):
    refs[1]["sentences"] = []
    data_dir, images_dir = refcoco_factory(refs=refs)
    result = read_refcoco(data_dir, images_dir, "testB")
    assert result.queries == []
    assert result.skipped_by_reason() == {"ref has no sentences": 1}
