"""Triplets in the formats other trainers read, and readers back for round-trip checks.

Input: a DataFrame of triplets, one row per box, with columns `TRIPLET_COLUMNS`: item_id,
image_path (relative to the images root), width, height, description, phrase_id, phrase, box_id,
x0, y0, x1, y1 (box_xyxy in pixels), score. A phrase without a box has NaN coordinates; it is left
out of every export (and counted), because these formats have no way to say "no box here" and a
trainer would read the phrase as a negative. An item whose phrases all lack boxes is left out too.

Formats:
- COCO grounding JSON (`write_coco_grounding`), the MDETR / GLIP "mixed grounding" layout: `info`,
  `licenses`, one image per item with its `caption`; one annotation per box with bbox [x, y, w, h],
  `segmentation` (the box as one polygon), area, iscrowd 0, the single category 1 "object", the
  `phrase`, and `tokens_positive` (every character span of the phrase in the caption), plus
  phrase_id, box_id and score for tracing. A category per phrase text was rejected: synthetic
  phrases are open vocabulary, so every wording would become its own class and a detection trainer
  would treat "a cat" and "the cat" as different objects (docs/releases.md: conventions).
- ODVG jsonl (`write_odvg`), the Grounding DINO / MM-Grounding-DINO grounding format: one line per
  item {"filename", "height", "width", "grounding": {"caption", "regions": [{"bbox": [x0, y0, x1,
  y1], "phrase", "tokens_positive", "phrase_id"}]}}, plus "item_id" for tracing.
- AMC / ALBEF grounding JSON (`write_amc_grounding`), the layout AMC's `pretrain_dataset` reads
  with `phrase_input=True`: a list with one entry per (item, phrase) {"image": image_path,
  "caption": phrase, "bbox": [[x0, y0, x1, y1], ...] (every box of that phrase; AMC samples one)},
  plus "item_id", "phrase_id", "box_ids", "width", "height", which its loader ignores.

The caption of an item is its description. A phrase is found in it on word boundaries, case-insensitive,
at every occurrence ("a cat" is not inside "A catamaran"); a phrase missing from it (real data such as
Visual Genome has no description) is appended as a sentence of its own ("A yellow square. A black
line"), so every region has a valid span. Boxes are clipped to their image (a detector's box may pass
the edge by up to `BOX_TOLERANCE_PX`).
Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import pandas as pd
from PIL import Image

from synground_assets.datasets.common import GroundingQuery, box_problem, clip_to_image

TRIPLET_COLUMNS = (
    "item_id", "image_path", "width", "height", "description", "phrase_id", "phrase", "box_id",
    "x0", "y0", "x1", "y1", "score",
)
BOX_COLUMNS = ["x0", "y0", "x1", "y1"]
# MDETR's convention for its grounding annotations (one category, the phrase carries the meaning):
# ashkamath/mdetr scripts/pre-training/flickr_combined.py:247 (categories) and :364 (`tokens_positive`,
# a list of every span of the annotation's phrases); GLIP's mixed grounding files use the same layout.
COCO_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
SENTENCE_END = ".!?"
Spans = dict[str, list[list[int]]]  # phrase text -> every [start, end) of it in the caption


@dataclass(frozen=True)
class CocoInfo:
    """The COCO `info` block and the one licence entry every image of the export refers to."""

    description: str
    version: str
    contributor: str
    date_created: str  # ISO 8601
    licence_name: str
    licence_url: str = ""
    url: str = ""

    def info(self) -> dict:
        return {"description": self.description, "url": self.url, "version": self.version,
                "year": int(self.date_created[:4]), "contributor": self.contributor,
                "date_created": self.date_created}

    def licenses(self) -> list[dict]:
        return [{"id": 1, "name": self.licence_name, "url": self.licence_url}]


def default_coco_info() -> CocoInfo:
    from datetime import datetime, timezone

    return CocoInfo("SynGround visual-grounding triplets", "1", "synground-assets",
                    datetime.now(timezone.utc).isoformat(timespec="seconds"), "unspecified")


@dataclass(frozen=True)
class ExportCounts:
    """What an export wrote, and how many phrases it left out for lack of a box."""

    images: int
    phrases: int
    boxes: int
    phrases_without_box: int


# ---- writers -------------------------------------------------------------------------------


def write_coco_grounding(triplets: pd.DataFrame, path: Path, info: CocoInfo | None = None) -> ExportCounts:
    boxes, counts = boxed_rows(triplets)
    info = info or default_coco_info()
    images, annotations = [], []
    for image_id, (item_id, rows) in enumerate(boxes.groupby("item_id", sort=False), start=1):
        caption, spans = caption_with_spans(rows["description"].iloc[0], rows["phrase"])
        images.append({**_image_fields(rows), "id": image_id, "file_name": rows["image_path"].iloc[0],
                       "license": 1, "date_captured": info.date_created, "caption": caption,
                       "item_id": str(item_id)})
        for row in rows.itertuples(index=False):
            x0, y0, x1, y1 = box_of(row)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": COCO_CATEGORY["id"],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": [box_polygon((x0, y0, x1, y1))],
                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                "phrase": row.phrase, "tokens_positive": spans[row.phrase],
                "phrase_id": str(row.phrase_id), "box_id": str(row.box_id), "score": _score_of(row),
            })
    document = {"info": info.info(), "licenses": info.licenses(), "images": images, "annotations": annotations,
                "categories": [COCO_CATEGORY]}
    write_atomically(Path(path), json.dumps(document, allow_nan=False))
    return counts


def write_odvg(triplets: pd.DataFrame, path: Path) -> ExportCounts:
    boxes, counts = boxed_rows(triplets)
    lines = []
    for item_id, rows in boxes.groupby("item_id", sort=False):
        caption, spans = caption_with_spans(rows["description"].iloc[0], rows["phrase"])
        regions = [
            {"bbox": list(box_of(row)), "phrase": row.phrase, "tokens_positive": spans[row.phrase],
             "phrase_id": str(row.phrase_id)}
            for row in rows.itertuples(index=False)
        ]
        size = _image_fields(rows)
        record = {"filename": rows["image_path"].iloc[0], "height": size["height"], "width": size["width"],
                  "grounding": {"caption": caption, "regions": regions}, "item_id": str(item_id)}
        lines.append(json.dumps(record, allow_nan=False))
    write_atomically(Path(path), "".join(line + "\n" for line in lines))
    return counts


def write_amc_grounding(triplets: pd.DataFrame, path: Path) -> ExportCounts:
    boxes, counts = boxed_rows(triplets)
    entries = []
    for (item_id, phrase_id), rows in boxes.groupby(["item_id", "phrase_id"], sort=False):
        entries.append({
            "image": rows["image_path"].iloc[0], "caption": rows["phrase"].iloc[0],
            "bbox": [list(box_of(row)) for row in rows.itertuples(index=False)],
            "item_id": str(item_id), "phrase_id": str(phrase_id),
            "box_ids": [str(box_id) for box_id in rows["box_id"]], **_image_fields(rows),
        })
    write_atomically(Path(path), json.dumps(entries, allow_nan=False))
    return counts


def boxed_rows(triplets: pd.DataFrame) -> tuple[pd.DataFrame, ExportCounts]:
    """The rows with a box, checked; and the counts an export reports."""
    missing = [column for column in TRIPLET_COLUMNS if column not in triplets.columns]
    if missing:
        raise ValueError(f"triplets lack the columns {missing}; expected {list(TRIPLET_COLUMNS)}")
    coordinates = triplets[BOX_COLUMNS]
    partial = coordinates.isna().any(axis=1) & ~coordinates.isna().all(axis=1)
    if partial.any():
        raise ValueError(f"box_id {triplets.loc[partial, 'box_id'].iloc[0]!r} has some but not all coordinates")
    boxes = triplets[coordinates.notna().all(axis=1)]
    for row in boxes.itertuples(index=False):
        check_row(row)
    phrases_with_box = set(zip(boxes["item_id"], boxes["phrase_id"]))
    all_phrases = set(zip(triplets["item_id"], triplets["phrase_id"]))
    counts = ExportCounts(
        images=boxes["item_id"].nunique(), phrases=len(phrases_with_box), boxes=len(boxes),
        phrases_without_box=len(all_phrases - phrases_with_box),
    )
    return boxes, counts


def check_row(row) -> None:
    """A path a trainer can join to its images root, and a box inside its image."""
    where = f"triplets row box_id={row.box_id!r} (item {row.item_id!r})"
    image_path = PurePosixPath(str(row.image_path))
    if image_path.is_absolute() or ".." in image_path.parts or not image_path.parts:
        raise ValueError(f"{where}: image_path {row.image_path!r} must be relative to the images root")
    if not all(isinstance(side, Real) and side > 0 for side in (row.width, row.height)):
        raise ValueError(f"{where}: image size {row.width!r}x{row.height!r} is not positive")
    raw = _raw_box(row)
    # A box within the tolerance past the edge is clipped; what is left of it must not be empty.
    problem = box_problem(raw, (int(row.width), int(row.height))) or box_problem(box_of(row), None)
    if problem:
        raise ValueError(f"{where}: {problem}: {raw} in a {row.width}x{row.height} image")
    if not isinstance(row.phrase, str) or not row.phrase.strip():
        raise ValueError(f"{where}: phrase {row.phrase!r} is not a non-empty text")


def caption_with_spans(description: object, phrases: Iterable[str]) -> tuple[str, Spans]:
    """The item's caption and every [start, end) of each phrase in it: case-insensitive, on word
    boundaries (a phrase inside a longer word is no match), every occurrence (COCO's
    `tokens_positive` lists several spans for one annotation). A phrase with no occurrence is
    appended as a sentence of its own, so it has exactly one span."""
    caption = "" if _is_missing(description) else str(description)
    spans: Spans = {}
    for phrase in dict.fromkeys(phrases):
        found = phrase_spans(caption, phrase)
        if not found:
            caption = append_sentence(caption, phrase)
            found = [[len(caption) - len(phrase), len(caption)]]
        spans[phrase] = found
    return caption, spans


def phrase_spans(caption: str, phrase: str) -> list[list[int]]:
    """Every case-insensitive occurrence of `phrase` in `caption` not touching a letter or digit on
    either side ("a cat" matches in "next to a cat." but not in "A catamaran")."""
    pattern = re.compile(rf"(?<!\w){re.escape(phrase.strip())}(?!\w)", re.IGNORECASE)
    return [[match.start(), match.end()] for match in pattern.finditer(caption)] if phrase.strip() else []


def append_sentence(caption: str, phrase: str) -> str:
    """`caption` then `phrase` as a new sentence: "A yellow square." + "a black line" gives
    "A yellow square. A black line" (one full stop, however the caption ended)."""
    sentence = phrase[:1].upper() + phrase[1:]
    head = caption.rstrip()
    if not head:
        return sentence
    head = head if head[-1] in SENTENCE_END else head.rstrip(",;:") + "."
    return f"{head} {sentence}"


def box_polygon(box: tuple[float, float, float, float]) -> list[float]:
    """The box as the one polygon COCO's `segmentation` holds, corners clockwise from the top left:
    what pycocotools writes for a box-only result (cocodataset/cocoapi PythonAPI/pycocotools/coco.py:337,
    `loadRes`: `ann['segmentation'] = [[x1, y1, x1, y2, x2, y2, x2, y1]]`)."""
    x0, y0, x1, y1 = box
    return [x0, y0, x0, y1, x1, y1, x1, y0]


def write_atomically(path: Path, text: str) -> None:
    """Write next to `path`, then rename. A plain open (not tempfile's private 0600 file) gives the
    export the permissions of the umask, so trainers running as another user can read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def box_of(row) -> tuple[float, float, float, float]:
    """The row's box clipped to its image (`check_row` allows `BOX_TOLERANCE_PX` past the edge)."""
    return clip_to_image(_raw_box(row), (int(row.width), int(row.height)))


def _raw_box(row) -> tuple[float, float, float, float]:
    return (float(row.x0), float(row.y0), float(row.x1), float(row.y1))


def _score_of(row) -> float | None:
    """A box without a detector score (a layout box) is written as null: JSON has no NaN."""
    return None if _is_missing(float(row.score)) else float(row.score)


def _image_fields(rows: pd.DataFrame) -> dict[str, int]:
    return {"width": int(rows["width"].iloc[0]), "height": int(rows["height"].iloc[0])}


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---- readers back --------------------------------------------------------------------------

def read_coco_grounding(path: Path) -> pd.DataFrame:
    """One row per annotation, read with pycocotools (the reader COCO trainers use)."""
    from pycocotools.coco import COCO  # optional dependency: only needed to read back

    coco = COCO(str(path))
    rows = []
    for annotation in coco.dataset["annotations"]:
        image = coco.imgs[annotation["image_id"]]
        x, y, width, height = annotation["bbox"]
        rows.append({
            "item_id": image["item_id"], "image_path": image["file_name"], "width": image["width"],
            "height": image["height"], "caption": image["caption"], "phrase_id": annotation["phrase_id"],
            "phrase": annotation["phrase"], "box_id": annotation["box_id"],
            "x0": x, "y0": y, "x1": x + width, "y1": y + height, "score": annotation["score"],
            "tokens_positive": annotation["tokens_positive"],
        })
    return pd.DataFrame(rows)


def read_odvg(path: Path) -> pd.DataFrame:
    """One row per region."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        grounding = record["grounding"]
        for region in grounding["regions"]:
            x0, y0, x1, y1 = region["bbox"]
            rows.append({
                "item_id": record["item_id"], "image_path": record["filename"], "width": record["width"],
                "height": record["height"], "caption": grounding["caption"], "phrase": region["phrase"],
                "phrase_id": region.get("phrase_id"), "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                "tokens_positive": region["tokens_positive"],
            })
    return pd.DataFrame(rows)


def read_amc_grounding(path: Path) -> pd.DataFrame:
    """One row per box."""
    rows = []
    for entry in json.loads(Path(path).read_text(encoding="utf-8")):
        for box_id, (x0, y0, x1, y1) in zip(entry["box_ids"], entry["bbox"]):
            rows.append({
                "item_id": entry["item_id"], "image_path": entry["image"], "width": entry["width"],
                "height": entry["height"], "phrase_id": entry["phrase_id"], "phrase": entry["caption"],
                "box_id": box_id, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            })
    return pd.DataFrame(rows)


# ---- real data into the triplet table ------------------------------------------------------


def queries_to_triplets(queries: Sequence[GroundingQuery], images_root: Path) -> pd.DataFrame:
    """Real-data queries (e.g. Visual Genome) as triplet rows, so they export and mix with
    synthetic triplets. One item per image; ground-truth boxes get score 1.0."""
    images_root = Path(images_root)
    rows = []
    for query in queries:
        width, height = query.image_size or _image_size(query.image_path)
        image_path = query.image_path.relative_to(images_root).as_posix()
        for box_index, (x0, y0, x1, y1) in enumerate(query.boxes_xyxy):
            rows.append({
                "item_id": image_path, "image_path": image_path, "width": width, "height": height,
                "description": "", "phrase_id": query.query_id, "phrase": query.phrase,
                "box_id": f"{query.query_id}:{box_index}", "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                "score": 1.0,
            })
    return pd.DataFrame(rows, columns=list(TRIPLET_COLUMNS))


@lru_cache(maxsize=4096)
def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:  # reads the header only
        return image.size
