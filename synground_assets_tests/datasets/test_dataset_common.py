"""The checks every reader shares: paths stay inside their folder, boxes inside their image."""

from __future__ import annotations

import pytest

from synground_assets.datasets.common import (
    DatasetError,
    box_problem,
    box_xywh_to_xyxy,
    clip_to_image,
    resolve_inside,
)


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "..\\x.jpg", "C:/x.jpg", "", "."])
def test_names_leaving_the_folder_are_refused(tmp_path, name):
    with pytest.raises(DatasetError, match="points outside"):
        resolve_inside(tmp_path, name, "somewhere")


def test_relative_names_join_the_folder(tmp_path):
    assert resolve_inside(tmp_path, "train2014/a.jpg", "x") == tmp_path / "train2014" / "a.jpg"


def test_symlinked_image_folder_is_allowed(tmp_path):
    (tmp_path / "disk").mkdir()
    (tmp_path / "disk" / "a.jpg").write_bytes(b"")
    (tmp_path / "images").symlink_to(tmp_path / "disk")
    assert resolve_inside(tmp_path / "images", "a.jpg", "x").is_file()


def test_xywh_to_xyxy():
    assert box_xywh_to_xyxy(1, 2, 3, 4) == (1.0, 2.0, 4.0, 6.0)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ((0, 0, 10, 10), None),
        ((-0.5, 0, 10.8, 10), None),                      # within the 1-pixel rounding tolerance
        ((0, 0, 12, 10), "box outside its image"),
        ((5, 5, 5, 8), "empty box (x1 <= x0 or y1 <= y0)"),
        ((0, 0, float("nan"), 3), "box has a non-finite coordinate"),
    ],
)
def test_box_problem(box, reason):
    assert box_problem(box, (10, 10)) == reason


def test_small_overrun_is_clipped():
    assert clip_to_image((-0.5, 0.0, 10.8, 10.0), (10, 10)) == (0.0, 0.0, 10.0, 10.0)
    assert clip_to_image((-0.5, 0.0, 10.8, 10.0), None) == (-0.5, 0.0, 10.8, 10.0)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)
