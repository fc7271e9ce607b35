"""Visual Genome regions as training triplets: bad regions skipped and counted, bad files refused."""

from __future__ import annotations

import json

import pytest

from synground_assets.datasets.common import DatasetError
from synground_assets.datasets.visual_genome import read_visual_genome


def read(root, **options):
    return read_visual_genome(root / "region_descriptions.json", root / "images", **options)


def test_usable_regions_become_triplets_with_xyxy_boxes(vg_root):
    result = read(vg_root, image_data_path=vg_root / "image_data.json")
    assert [(query.query_id, query.phrase, query.boxes_xyxy) for query in result.queries] == [
        ("11", "a red ball", [(2.0, 3.0, 12.0, 23.0)]),
        ("21", "a tree", [(30.0, 30.0, 40.0, 40.0)]),
    ]
    assert result.queries[0].image_size == (40, 40)
    assert result.queries[1].source == {"image_id": 2, "region_id": 21}


def test_images_are_found_in_either_release_part(vg_root):
    paths = {query.image_path for query in read(vg_root).queries}
    assert paths == {vg_root / "images" / "VG_100K" / "1.jpg", vg_root / "images" / "VG_100K_2" / "2.jpg"}


def test_bad_regions_are_skipped_and_counted(vg_root):
    result = read(vg_root, image_data_path=vg_root / "image_data.json")
    assert result.skipped_by_reason() == {
        "empty box (x1 <= x0 or y1 <= y0)": 1,
        "empty phrase": 1,
        "box outside its image": 1,
    }
    assert result.skipped[-1].where.endswith("region_descriptions.json [1].regions[1]")


def test_without_image_sizes_only_the_outside_check_is_off(vg_root):
    result = read(vg_root)
    assert [query.query_id for query in result.queries] == ["11", "21", "22"]
    assert result.queries[0].image_size is None
    assert len(result.skipped) == 2


def test_max_images_reads_the_first_entries(vg_root):
    assert [query.query_id for query in read(vg_root, max_images=1).queries] == ["11"]


def test_missing_image_is_an_error_naming_the_entry(vg_root):
    (vg_root / "images" / "VG_100K_2" / "2.jpg").unlink()
    with pytest.raises(DatasetError, match=r"\[1\]: image 2\.jpg not found .*Fix: download both"):
        read(vg_root)


def test_malformed_region_names_its_key(vg_factory):
    regions = [{"id": 1, "regions": [{"region_id": 11, "image_id": 1, "x": 2, "y": 3, "width": "wide",
                                      "height": 4, "phrase": "a ball"}]}]
    root = vg_factory(regions=regions)
    with pytest.raises(DatasetError, match=r"region_descriptions\.json \[0\]\.regions\[0\]: malformed region"):
        read(root)


def test_entry_with_a_non_integer_image_id_is_refused(vg_factory):
    root = vg_factory(regions=[{"id": "../1", "regions": []}])
    with pytest.raises(DatasetError, match=r"\[0\]: image id '\.\./1' is not an integer"):
        read(root)


def test_truncated_json_names_the_line(vg_root):
    text = json.dumps(json.loads((vg_root / "region_descriptions.json").read_text()), indent=1)
    (vg_root / "region_descriptions.json").write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError, match=r"region_descriptions\.json:\d+:\d+: not valid JSON"):
        read(vg_root)


def test_missing_regions_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"region_descriptions\.json: region descriptions not found"):
        read(tmp_path)
