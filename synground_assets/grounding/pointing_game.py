"""The pointing game (AMC's evaluation): a heatmap points at one pixel; a hit if it is inside a box.

Conventions:
- The heatmap is upsampled (bilinear, align_corners=False) to the original image size; the point
  is the FIRST pixel with the maximal value in row-major order (row y, then column x), as
  `argmax` over the flattened map gives it.
- Boxes are `box_xyxy` in pixels with x1/y1 exclusive (as `roles/base.py`): pixel (x, y), the unit
  square [x, x+1) x [y, y+1), is inside iff its centre (x + 0.5, y + 0.5) lies in [x0, x1) x
  [y0, y1). For integer boxes that is x0 <= x < x1 and y0 <= y < y1; a box with x0=2, x1=5
  contains columns 2, 3, 4. Readers of 1-based inclusive formats (Flickr30k Entities XML)
  convert to this before scoring.
- A query is a hit if the point is inside ANY of its boxes (Flickr30k Entities); RefCOCO+ has one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch
from PIL import Image

from synground_assets.grounding.data import Triplet
from synground_assets.grounding.gradcam import cross_attention_gradcam, upsample_cam
from synground_assets.roles.grounding_blip import GroundingModel

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PointingQuery:
    """One query to score: its boxes and the image size (width, height) it lives in."""

    boxes_xyxy: Sequence[Box]
    image_size: tuple[int, int]
    item_id: str | None = None
    phrase: str = ""


@dataclass(frozen=True)
class PointingResult:
    item_id: str | None
    phrase: str
    point_xy: tuple[int, int]  # (column, row) in pixels of the original image
    hit: bool


@dataclass
class PointingGameResult:
    accuracy: float
    results: list[PointingResult] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return sum(result.hit for result in self.results)

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "hits": self.hits,
            "queries": len(self.results),
            "results": [
                {"item_id": r.item_id, "phrase": r.phrase, "point_xy": list(r.point_xy), "hit": r.hit}
                for r in self.results
            ],
        }


def point_in_box(point_xy: tuple[int, int], box_xyxy: Box) -> bool:
    """Pixel-centre rule with exclusive x1/y1 (see the module docstring)."""
    cx, cy = point_xy[0] + 0.5, point_xy[1] + 0.5
    x0, y0, x1, y1 = box_xyxy
    return x0 <= cx < x1 and y0 <= cy < y1


def point_in_any_box(point_xy: tuple[int, int], boxes_xyxy: Sequence[Box]) -> bool:
    return any(point_in_box(point_xy, box) for box in boxes_xyxy)


def heatmap_point(heatmap: torch.Tensor, image_size: tuple[int, int]) -> tuple[int, int]:
    """(column, row) of the first maximal pixel of a (rows, cols) map upsampled to (width, height)."""
    width, height = image_size
    full = upsample_cam(heatmap[None].float(), (height, width))[0]  # (height, width)
    index = int(torch.argmax(full.flatten()))  # the first maximal index, row-major
    return index % width, index // width


def score_points(points_xy: Sequence[tuple[int, int]], queries: Sequence[PointingQuery]) -> PointingGameResult:
    if len(points_xy) != len(queries):
        raise ValueError(f"got {len(points_xy)} points for {len(queries)} queries")
    results = [
        PointingResult(q.item_id, q.phrase, (int(p[0]), int(p[1])), point_in_any_box(p, q.boxes_xyxy))
        for p, q in zip(points_xy, queries)
    ]
    accuracy = sum(r.hit for r in results) / len(results) if results else 0.0
    return PointingGameResult(accuracy=accuracy, results=results)


def score_heatmaps(heatmaps: Sequence[torch.Tensor], queries: Sequence[PointingQuery]) -> PointingGameResult:
    """Pointing game of one (rows, cols) heatmap per query."""
    return score_points([heatmap_point(h, q.image_size) for h, q in zip(heatmaps, queries)], queries)


def centre_point_baseline(queries: Sequence[PointingQuery]) -> PointingGameResult:
    """Always point at the image centre pixel (width // 2, height // 2)."""
    return score_points([(q.image_size[0] // 2, q.image_size[1] // 2) for q in queries], queries)


def random_point_baseline(queries: Sequence[PointingQuery], seed: int = 0) -> PointingGameResult:
    """Point at a pixel drawn uniformly from each image (seeded, so reruns agree)."""
    rng = random.Random(seed)
    points = [(rng.randrange(q.image_size[0]), rng.randrange(q.image_size[1])) for q in queries]
    return score_points(points, queries)


def evaluate_pointing_game(
    model: GroundingModel,
    triplets: Sequence[Triplet],
    resolution: int | None = None,
    batch_size: int = 32,
    gradcam_layer: int | None = None,
) -> PointingGameResult:
    """Pointing game of the model's GradCAM maps, the model fed at a square `resolution` (default:
    its own input size; AMC uses 384 for RefCOCO+ and 256 for Flickr30k)."""
    was_training = model.training
    model.eval()
    heatmaps, queries = [], []
    try:
        for start in range(0, len(triplets), batch_size):
            chunk = triplets[start : start + batch_size]
            images = [t.load_image() for t in chunk]
            inputs = model.preprocess(images, [t.phrase for t in chunk], resolution)
            cam = cross_attention_gradcam(model, inputs, layer=gradcam_layer).cam  # (b, rows, cols)
            heatmaps.extend(cam.float().cpu())
            queries.extend(PointingQuery(t.boxes_xyxy, image.size, t.item_id, t.phrase) for t, image in zip(chunk, images))
    finally:
        model.train(was_training)
    return score_heatmaps(heatmaps, queries)


def queries_of(triplets: Sequence[Triplet]) -> list[PointingQuery]:
    """Pointing queries of triplets (reads each image's size), for the baselines."""
    queries = []
    for t in triplets:
        if isinstance(t.image, Image.Image):
            size = t.image.size
        else:
            with Image.open(t.image) as image:
                size = image.size
        queries.append(PointingQuery(t.boxes_xyxy, size, t.item_id, t.phrase))
    return queries
