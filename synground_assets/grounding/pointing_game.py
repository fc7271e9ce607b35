"""The pointing game: a heatmap points at one pixel; a hit if it is inside a box of the phrase.

Boxes are `box_xyxy` in pixels of the original image with x1/y1 exclusive (as `roles/base.py`);
readers of other formats (COCO xywh, Flickr30k Entities' 1-based XML) convert to it. The point is
the FIRST pixel with the maximal value of the upsampled map in row-major order (row y, then column
x), as `argmax` over the flattened map gives it. A query is a hit if the point is inside ANY of
its boxes (Flickr30k Entities); RefCOCO+ has one. Two protocols:

- `amc`: AMC's released evaluation, exactly (AMC-grounding grounding_eval_singlegpu*.py and
  dataset/utils.py). The map is `gradcam.amc_evaluation_map` (raw, mean over all padded token
  positions), upsampled with BICUBIC interpolation; the hit is strict on the integer pixel:
  `x > x0 and x < x0 + w and y > y0 and y < y0 + h` for RefCOCO+'s COCO boxes (x1 = x0 + w), and
  `x > xmin and x < xmax ...` on Flickr30k's boxes as its toolkit reads them (0-based, inclusive
  corners: xmax = x1 - 1), so `last_corner_inclusive=True` for Flickr30k. The default of the
  paper's benchmarks (RefCOCO+ at 384 px, Flickr30k at 256 px).
- `pixel-centre`: the project's own. The map is the min-max normalised GradCAM the AMC loss trains
  on (mean over real tokens only), upsampled BILINEARLY; pixel (x, y), the unit square
  [x, x+1) x [y, y+1), is inside iff its centre lies in [x0, x1) x [y0, y1), i.e. x0 <= x < x1 for
  integer boxes. The default of `shapes_test` and of held-out evaluation during training.

The two can point at different pixels (bicubic overshoots where bilinear does not) and score the
same pixel differently on a box's first row and column (strict vs inclusive).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from PIL import Image

from synground_assets.grounding.config import GRADCAM_MODES, PROTOCOLS
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.gradcam import (
    MapCombiner,
    amc_evaluation_map,
    cross_attention_gradcam,
    gradcam_from_attention,
    itc_gradcam,
    upsample_cam,
)
from synground_assets.grounding.model import GroundingModel

Box = tuple[float, float, float, float]
HitRule = Callable[[tuple[int, int], Box], bool]


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
    """Pixel-centre rule with exclusive x1/y1 (`pixel-centre` protocol)."""
    cx, cy = point_xy[0] + 0.5, point_xy[1] + 0.5
    x0, y0, x1, y1 = box_xyxy
    return x0 <= cx < x1 and y0 <= cy < y1


def point_in_box_strict(point_xy: tuple[int, int], box_xyxy: Box) -> bool:
    """AMC's rule on RefCOCO+ (`x > x0 and x < x0 + w and y > y0 and y < y0 + h`), x1 = x0 + w."""
    x, y = point_xy
    x0, y0, x1, y1 = box_xyxy
    return x0 < x < x1 and y0 < y < y1


def point_in_box_strict_inclusive_corners(point_xy: tuple[int, int], box_xyxy: Box) -> bool:
    """AMC's rule on Flickr30k (`x > xmin and x < xmax ...`) on the toolkit's inclusive corners."""
    x0, y0, x1, y1 = box_xyxy
    return point_in_box_strict(point_xy, (x0, y0, x1 - 1, y1 - 1))


@dataclass(frozen=True)
class PointingProtocol:
    """How a GradCAM becomes a point and the point a hit (see the module docstring)."""

    name: str
    combine: MapCombiner  # (attention, gradient, text mask, grid) -> (B, rows, cols)
    upsample: str  # interpolation from the grid to the image: "bicubic" or "bilinear"
    hit: HitRule


def pointing_protocol(name: str = "pixel-centre", last_corner_inclusive: bool = False) -> PointingProtocol:
    """A protocol by name; `last_corner_inclusive` is AMC's Flickr30k box reading (amc only)."""
    if name == "amc":
        hit = point_in_box_strict_inclusive_corners if last_corner_inclusive else point_in_box_strict
        return PointingProtocol("amc", amc_evaluation_map, "bicubic", hit)
    if name == "pixel-centre":
        return PointingProtocol("pixel-centre", gradcam_from_attention, "bilinear", point_in_box)
    raise ValueError(f"pointing-game protocol must be one of {', '.join(PROTOCOLS)} but is {name!r}")


def as_protocol(protocol: str | PointingProtocol) -> PointingProtocol:
    return protocol if isinstance(protocol, PointingProtocol) else pointing_protocol(protocol)


def point_in_any_box(point_xy: tuple[int, int], boxes_xyxy: Sequence[Box], hit: HitRule = point_in_box) -> bool:
    return any(hit(point_xy, box) for box in boxes_xyxy)


def heatmap_point(heatmap: torch.Tensor, image_size: tuple[int, int], upsample: str = "bilinear") -> tuple[int, int]:
    """(column, row) of the first maximal pixel of a (rows, cols) map upsampled to (width, height)."""
    width, height = image_size
    full = upsample_cam(heatmap[None].float(), (height, width), upsample)[0]  # (height, width)
    index = int(torch.argmax(full.flatten()))  # the first maximal index, row-major
    return index % width, index // width


def score_points(
    points_xy: Sequence[tuple[int, int]],
    queries: Sequence[PointingQuery],
    protocol: str | PointingProtocol = "pixel-centre",
) -> PointingGameResult:
    if len(points_xy) != len(queries):
        raise ValueError(f"got {len(points_xy)} points for {len(queries)} queries")
    hit = as_protocol(protocol).hit
    results = [
        PointingResult(q.item_id, q.phrase, (int(p[0]), int(p[1])), point_in_any_box(p, q.boxes_xyxy, hit))
        for p, q in zip(points_xy, queries)
    ]
    accuracy = sum(r.hit for r in results) / len(results) if results else 0.0
    return PointingGameResult(accuracy=accuracy, results=results)


def score_heatmaps(
    heatmaps: Sequence[torch.Tensor],
    queries: Sequence[PointingQuery],
    protocol: str | PointingProtocol = "pixel-centre",
) -> PointingGameResult:
    """Pointing game of one (rows, cols) heatmap per query."""
    protocol = as_protocol(protocol)
    points = [heatmap_point(h, q.image_size, protocol.upsample) for h, q in zip(heatmaps, queries)]
    return score_points(points, queries, protocol)


def centre_point_baseline(
    queries: Sequence[PointingQuery], protocol: str | PointingProtocol = "pixel-centre"
) -> PointingGameResult:
    """Always point at the image centre pixel (width // 2, height // 2)."""
    return score_points([(q.image_size[0] // 2, q.image_size[1] // 2) for q in queries], queries, protocol)


def random_point_baseline(
    queries: Sequence[PointingQuery], seed: int = 0, protocol: str | PointingProtocol = "pixel-centre"
) -> PointingGameResult:
    """Point at a pixel drawn uniformly from each image (seeded, so reruns agree)."""
    rng = random.Random(seed)
    points = [(rng.randrange(q.image_size[0]), rng.randrange(q.image_size[1])) for q in queries]
    return score_points(points, queries, protocol)


def evaluate_pointing_game(
    model: GroundingModel,
    triplets: Sequence[Triplet],
    resolution: int | None = None,
    batch_size: int = 32,
    gradcam_layer: int | None = None,
    protocol: str | PointingProtocol = "pixel-centre",
    gradcam_mode: str = "itm",
) -> PointingGameResult:
    """Pointing game of the model's GradCAM maps, the model fed at a square `resolution` (default:
    its own input size; AMC uses 384 for RefCOCO+ and 256 for Flickr30k). `gradcam_mode` "itm":
    the cross-attention GradCAM of the match logit, combined as the protocol says; "itc": ALBEF's
    ITC-mode map (`gradcam.itc_gradcam`), then the protocol's upsampling and hit rule."""
    if gradcam_mode not in GRADCAM_MODES:
        raise ValueError(f"gradcam_mode must be one of {', '.join(GRADCAM_MODES)} but is {gradcam_mode!r}")
    protocol = as_protocol(protocol)
    was_training = model.training
    model.eval()
    heatmaps, queries = [], []
    try:
        for start in range(0, len(triplets), batch_size):
            chunk = triplets[start : start + batch_size]
            images = [t.load_image() for t in chunk]
            inputs = model.preprocess(images, [t.phrase for t in chunk], resolution)
            if gradcam_mode == "itc":
                cam = itc_gradcam(model, inputs)  # (b, rows, cols)
            else:
                cam = cross_attention_gradcam(model, inputs, gradcam_layer, combine=protocol.combine).cam
            heatmaps.extend(cam.float().cpu())
            queries.extend(PointingQuery(t.boxes_xyxy, image.size, t.item_id, t.phrase)
                           for t, image in zip(chunk, images))
    finally:
        model.train(was_training)
    return score_heatmaps(heatmaps, queries, protocol)


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
