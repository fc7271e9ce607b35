"""Tiny datasets in the exact official file formats, written into tmp_path."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image


def make_image(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path)
    return path


# ---- RefCOCO+ (refer toolkit) --------------------------------------------------------------

COCO_FILE_NAME = "COCO_train2014_000000000101.jpg"


def refcoco_refs() -> list[dict]:
    """Two refs on one image as `refs(unc).p` holds them; the ref file_name has the annotation
    suffix and is NOT a file on disk."""
    return [
        {
            "ref_id": 7, "ann_id": 501, "image_id": 101, "split": "testA", "category_id": 1,
            "file_name": "COCO_train2014_000000000101_501.jpg",
            "sentences": [
                {"raw": "Man in RED shirt", "sent": "man in red shirt", "sent_id": 70,
                 "tokens": ["man", "in", "red", "shirt"]},
                {"raw": "left guy", "sent": "left guy", "sent_id": 71, "tokens": ["left", "guy"]},
            ],
        },
        {
            "ref_id": 8, "ann_id": 502, "image_id": 101, "split": "testB", "category_id": 3,
            "file_name": "COCO_train2014_000000000101_502.jpg",
            "sentences": [{"raw": "blue car", "sent": "blue car", "sent_id": 80, "tokens": ["blue", "car"]}],
        },
    ]


def refcoco_instances() -> dict:
    return {
        "images": [{"id": 101, "file_name": COCO_FILE_NAME, "width": 64, "height": 48}],
        "annotations": [
            {"id": 501, "image_id": 101, "bbox": [4.5, 6.0, 20.0, 30.0], "category_id": 1, "area": 600.0,
             "iscrowd": 0, "segmentation": []},
            {"id": 502, "image_id": 101, "bbox": [30.0, 10.0, 34.0, 38.0], "category_id": 3, "area": 1292.0,
             "iscrowd": 0, "segmentation": []},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }


def write_refcoco(root: Path, refs: object, instances: dict, with_image: bool = True) -> tuple[Path, Path]:
    data_dir = root / "refcoco+"
    data_dir.mkdir(parents=True, exist_ok=True)
    # Protocol 2 is what the refer toolkit's Python 2 pickles use.
    (data_dir / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (data_dir / "instances.json").write_text(json.dumps(instances))
    images_dir = root / "train2014"
    images_dir.mkdir(parents=True, exist_ok=True)
    if with_image:
        make_image(images_dir / COCO_FILE_NAME, (64, 48))
    return data_dir, images_dir


@pytest.fixture
def refcoco_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_refcoco(tmp_path, refcoco_refs(), refcoco_instances())


# ---- Flickr30k Entities --------------------------------------------------------------------

FLICKR_ID = "1001"
FLICKR_SENTENCES = (
    "[/EN#18/people A man] in [/EN#19/clothing an orange hat] starring at [/EN#0/notvisual something] .\n"
    "[/EN#18/people A man] and [/EN#20/people a boy] stand near [/EN#21/other a wall] .\n"
    "[/EN#22/scene A street] with [/EN#23/people/bodyparts two hands] .\n"
)
# Object 1 names chains 18 AND 20 (the box belongs to both); chain 18 also has a second box.
# Chain 21 has <nobndbox>, chain 22 is a scene; chain 23 has no object at all.
FLICKR_ANNOTATION = """<annotation>
  <folder>flickr30k_images</folder>
  <filename>1001.jpg</filename>
  <source><database>Flickr30k Entities</database></source>
  <size><width>80</width><height>60</height><depth>3</depth></size>
  <segmented>0</segmented>
  <object>
    <name>18</name>
    <name>20</name>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>40</xmax><ymax>60</ymax></bndbox>
  </object>
  <object>
    <name>18</name>
    <bndbox><xmin>51</xmin><ymin>11</ymin><xmax>80</xmax><ymax>30</ymax></bndbox>
  </object>
  <object>
    <name>19</name>
    <bndbox><xmin>11</xmin><ymin>3</ymin><xmax>20</xmax><ymax>10</ymax></bndbox>
  </object>
  <object>
    <name>21</name>
    <nobndbox>1</nobndbox>
    <scene>0</scene>
  </object>
  <object>
    <name>22</name>
    <nobndbox>0</nobndbox>
    <scene>1</scene>
  </object>
</annotation>
"""


def write_flickr(root: Path, sentences: str = FLICKR_SENTENCES, annotation: str = FLICKR_ANNOTATION,
                 split_lines: str = f"{FLICKR_ID}\n") -> Path:
    (root / "Sentences").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Sentences" / f"{FLICKR_ID}.txt").write_text(sentences)
    (root / "Annotations" / f"{FLICKR_ID}.xml").write_text(annotation)
    (root / "test.txt").write_text(split_lines)
    make_image(root / "flickr30k-images" / f"{FLICKR_ID}.jpg", (80, 60))
    return root


@pytest.fixture
def flickr_root(tmp_path: Path) -> Path:
    return write_flickr(tmp_path / "flickr30k_entities")


# ---- Visual Genome -------------------------------------------------------------------------


def vg_regions() -> list[dict]:
    def region(region_id, image_id, x, y, width, height, phrase):
        return {"region_id": region_id, "image_id": image_id, "x": x, "y": y, "width": width,
                "height": height, "phrase": phrase}

    return [
        {"id": 1, "regions": [
            region(11, 1, 2, 3, 10, 20, "a red ball"),
            region(12, 1, 0, 0, 0, 5, "a flat thing"),          # empty box
            region(13, 1, 5, 5, 10, 10, "   "),                 # empty phrase
        ]},
        {"id": 2, "regions": [
            region(21, 2, 30, 30, 10, 10, "a tree"),
            region(22, 2, 60, 40, 50, 50, "a far cloud"),       # outside the 64x48 image
        ]},
    ]


def write_visual_genome(root: Path, regions: object = None, with_sizes: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "region_descriptions.json").write_text(json.dumps(vg_regions() if regions is None else regions))
    if with_sizes:
        sizes = [{"image_id": 1, "width": 40, "height": 40, "url": "https://x/VG_100K/1.jpg"},
                 {"image_id": 2, "width": 64, "height": 48, "url": "https://x/VG_100K_2/2.jpg"}]
        (root / "image_data.json").write_text(json.dumps(sizes))
    make_image(root / "images" / "VG_100K" / "1.jpg", (40, 40))
    make_image(root / "images" / "VG_100K_2" / "2.jpg", (64, 48))
    return root


@pytest.fixture
def vg_root(tmp_path: Path) -> Path:
    return write_visual_genome(tmp_path / "vg")


# ---- factories, for tests that change one thing in the official files ----------------------


@pytest.fixture
def refcoco_factory(tmp_path: Path):
    """Write refs and instances (defaults: the official-format fixture); returns (data_dir, images_dir)."""

    def factory(refs: object = None, instances: dict | None = None, with_image: bool = True):
        return write_refcoco(
            tmp_path,
            refcoco_refs() if refs is None else refs,
            refcoco_instances() if instances is None else instances,
            with_image,
        )

    return factory


@pytest.fixture
def flickr_factory(tmp_path: Path):
    def factory(**changes: str) -> Path:
        return write_flickr(tmp_path / "flickr30k_entities", **changes)

    return factory


@pytest.fixture
def vg_factory(tmp_path: Path):
    def factory(regions: object = None, with_sizes: bool = True) -> Path:
        return write_visual_genome(tmp_path / "vg", regions, with_sizes)

    return factory


@pytest.fixture
def refs() -> list[dict]:
    """A fresh copy of the fixture refs, for a test to damage."""
    return refcoco_refs()


@pytest.fixture
def instances() -> dict:
    return refcoco_instances()


@pytest.fixture
def flickr_annotation() -> str:
    """The official-format annotation XML of the fixture image, for a test to change."""
    return FLICKR_ANNOTATION
