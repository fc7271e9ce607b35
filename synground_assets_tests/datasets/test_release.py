"""An export's own images and manifest: verified images, hard links or copies, sha256 of every file."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from synground_assets.datasets.release import (
    file_digests,
    image_problem,
    place_file,
    place_images,
    verify_manifest,
    write_manifest,
)


def png(path: Path, size=(16, 12)) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def test_a_good_image_passes_and_broken_ones_say_why(tmp_path):
    good = png(tmp_path / "good.png")
    assert image_problem(good, (16, 12)) is None
    assert image_problem(good, (32, 32)) == "decodes to 16x12, the table says 32x32"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert image_problem(empty) == "empty file (0 bytes)"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    assert image_problem(truncated).startswith("does not decode (")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    assert image_problem(text).startswith("does not decode (UnidentifiedImageError")


def test_place_images_links_the_good_ones_and_records_the_broken_ones(tmp_path):
    source = tmp_path / "shard"
    good = png(source / "a.png")
    (source / "b.png").write_bytes(b"")
    placed = place_images([("a", good, Path("images/0/a.png"), (16, 12)),
                           ("b", source / "b.png", Path("images/0/b.png"), (16, 12))], tmp_path / "export")
    assert (placed.linked, placed.copied, placed.mode) == (1, 0, "hardlink")
    assert [(s.item_id, s.image_path, s.reason) for s in placed.skipped] == [("b", "images/0/b.png",
                                                                            "empty file (0 bytes)")]
    assert os.stat(tmp_path / "export/images/0/a.png").st_ino == good.stat().st_ino
    assert not (tmp_path / "export/images/0/b.png").exists()


def test_a_file_system_without_hard_links_gets_copies(tmp_path, monkeypatch):
    good = png(tmp_path / "a.png")

    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    assert place_file(good, tmp_path / "out" / "a.png", "auto") is False
    assert (tmp_path / "out" / "a.png").read_bytes() == good.read_bytes()
    assert os.stat(tmp_path / "out" / "a.png").st_ino != good.stat().st_ino
    with pytest.raises(OSError, match="cross-device"):
        place_file(good, tmp_path / "out" / "b.png", "hardlink")


def test_copy_mode_never_links(tmp_path):
    good = png(tmp_path / "a.png")
    placed = place_images([("a", good, Path("i/a.png"), (16, 12))], tmp_path / "export", "copy")
    assert placed.mode == "copy" and os.stat(tmp_path / "export/i/a.png").st_ino != good.stat().st_ino


def test_an_image_gone_mid_export_is_an_error_naming_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="republished while the export ran; rerun the exports asset"):
        place_images([("a", tmp_path / "gone.png", Path("i/a.png"), (1, 1))], tmp_path / "export")


def test_the_manifest_digests_find_a_changed_missing_or_extra_file(tmp_path):
    png(tmp_path / "images" / "a.png")
    (tmp_path / "coco.json").write_text("{}")
    write_manifest(tmp_path, {"files": file_digests(tmp_path)})
    assert set(json.loads((tmp_path / "manifest.json").read_text())["files"]) == {"coco.json", "images/a.png"}
    assert verify_manifest(tmp_path) == []
    (tmp_path / "coco.json").write_text("{ }")
    (tmp_path / "extra.txt").write_text("x")
    (tmp_path / "images" / "a.png").unlink()
    assert verify_manifest(tmp_path) == ["coco.json", "extra.txt", "images/a.png"]
