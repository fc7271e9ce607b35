"""Box filters, run in this order on one shard's boxes; each removal is returned with its reason.

1. confidence floor (`min_box_score`);
2. box area bounds as a fraction of the image (`min_box_area`, `max_box_area`);
3. NMS across the phrases of one image (`cross_phrase_nms_iou`). The rule: when boxes of two
   different phrases of one image overlap with IoU >= the threshold, one box is explained by two
   phrases and at most one pair is right; the better-scoring (phrase, box) pair is kept (ties: the
   phrase named first, then the phrase's better-ranked box). Greedy, best score first, as in NMS.
   Boxes of the same phrase never suppress each other here (the next filter caps them);
4. at most `max_boxes_per_phrase` boxes per phrase, best score first.

Boxes: a frame with box_id, phrase_id, item_id, x0, y0, x1, y1 (pixels, x1/y1 exclusive), score,
box_rank; plus the image width and height per item.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from synground_assets.quality.removals import Removal
from synground_assets.quality.settings import QualitySettings

STAGE = "boxes"


def box_iou(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes -> (N, N) pairwise IoU (torchvision.ops.box_iou's formula; torchvision is not a dependency)."""
    area = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]).clamp(min=0) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes_xyxy[:, None, :2], boxes_xyxy[None, :, :2])  # (N, N, 2)
    bottom_right = torch.minimum(boxes_xyxy[:, None, 2:], boxes_xyxy[None, :, 2:])  # (N, N, 2)
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (N, N)
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


def box_iou_numpy(boxes_xyxy: np.ndarray) -> np.ndarray:
    """`box_iou` on a float64 array, the same operations in the same order (equal results, bit for bit),
    without torch's per-call overhead: the NMS calls it once per image on a handful of boxes."""
    area = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]).clip(min=0) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1]).clip(min=0)
    top_left = np.maximum(boxes_xyxy[:, None, :2], boxes_xyxy[None, :, :2])
    bottom_right = np.minimum(boxes_xyxy[:, None, 2:], boxes_xyxy[None, :, 2:])
    sides = (bottom_right - top_left).clip(min=0)
    inter = sides[..., 0] * sides[..., 1]
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def filter_boxes(boxes: pd.DataFrame, sizes: pd.DataFrame,
                 settings: QualitySettings) -> tuple[pd.DataFrame, list[Removal]]:
    """The boxes that pass every filter (re-ranked per phrase, `box_rank` 0 = best kept) and the removals.

    sizes: item_id, width, height of each image (one row per item). The frame's columns are read
    into arrays once; the filters narrow one mask of surviving rows (no intermediate frames)."""
    removals: list[Removal] = []
    frame = _Columns(boxes, sizes)
    alive = np.ones(len(boxes), dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN (an image of unknown size) fails no bound, as in pandas
        _drop(frame, alive, frame.score < settings.min_box_score, "min_box_score", "score", frame.score,
              settings.min_box_score, removals)
        _drop(frame, alive, frame.area_fraction < settings.min_box_area, "min_box_area", "area_fraction",
              frame.area_fraction, settings.min_box_area, removals)
        _drop(frame, alive, frame.area_fraction > settings.max_box_area, "max_box_area", "area_fraction",
              frame.area_fraction, settings.max_box_area, removals)
    if settings.cross_phrase_nms_iou is not None:
        _cross_phrase_nms(frame, alive, settings.cross_phrase_nms_iou, removals)
    if settings.max_boxes_per_phrase is not None:
        rows = np.flatnonzero(alive)
        # Best first per phrase: score, then rank; ties keep frame order (a stable sort, as pandas').
        ordered = rows[np.lexsort((frame.rank[rows], -frame.score[rows], frame.phrase_codes[rows]))]
        position = np.zeros(len(boxes), dtype=np.int64)
        position[ordered] = _positions_in_groups(frame.phrase_codes[ordered])
        _drop(frame, alive, alive & (position >= settings.max_boxes_per_phrase), "max_boxes_per_phrase",
              "position", position + 1, settings.max_boxes_per_phrase, removals)
    rows = np.flatnonzero(alive)
    kept = boxes.iloc[rows][list(boxes.columns)].reset_index(drop=True)
    ordered = np.lexsort((frame.rank[rows], -frame.score[rows], frame.phrase_codes[rows]))
    rank = np.zeros(len(rows), dtype=np.int64)
    rank[ordered] = _positions_in_groups(frame.phrase_codes[rows][ordered])
    kept["box_rank"] = rank
    return kept, removals


class _Columns:
    """The columns the filters read, as arrays and lists (python values, as `itertuples` gives them)."""

    def __init__(self, boxes: pd.DataFrame, sizes: pd.DataFrame):
        self.item_ids, self.phrase_ids, self.box_ids = (boxes[c].tolist() for c in ("item_id", "phrase_id", "box_id"))
        self.score = boxes.score.to_numpy(dtype=np.float64)
        self.rank = boxes.box_rank.to_numpy()
        self.coordinates = boxes[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.float64)
        image_area = dict(zip(sizes.item_id.tolist(), (sizes.width * sizes.height).tolist()))
        area = np.array([image_area.get(item, np.nan) for item in self.item_ids], dtype=np.float64)
        x0, y0, x1, y1 = self.coordinates.T
        with np.errstate(divide="ignore", invalid="ignore"):
            self.area_fraction = (x1 - x0) * (y1 - y0) / area
        self.phrase_codes = pd.factorize(np.asarray(self.phrase_ids, dtype=object))[0]


def _positions_in_groups(sorted_codes: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... within each run of equal codes (the codes grouped: `groupby().cumcount()`)."""
    if not len(sorted_codes):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    return np.arange(len(sorted_codes)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_codes)]))


def _drop(frame: _Columns, alive: np.ndarray, mask: np.ndarray, name: str, measured: str, values: np.ndarray,
          threshold: float, removals: list[Removal]) -> None:
    for row in np.flatnonzero(alive & mask):
        value = values[row].item()
        removals.append(Removal(STAGE, frame.item_ids[row], name, float(value), float(threshold),
                                frame.phrase_ids[row], frame.box_ids[row], f"{measured} {value:.4g}"))
    alive &= ~mask


def _cross_phrase_nms(frame: _Columns, alive: np.ndarray, threshold: float, removals: list[Removal]) -> None:
    """Greedy NMS per image over the surviving boxes of different phrases; per image only its rows
    are sorted and compared."""
    survivors = np.flatnonzero(alive)
    if not len(survivors):
        return
    items, phrases, box_ids = frame.item_ids, frame.phrase_ids, frame.box_ids
    scores, ranks = frame.score, frame.rank
    # The phrase named first wins a tie: the index ending its id, '<item>:p<index>'.
    phrase_index = np.zeros(len(alive), dtype=np.int64)
    phrase_index[survivors] = [int(phrases[row].rsplit(":p", 1)[-1]) for row in survivors]
    for rows in _rows_per_item(np.asarray([items[row] for row in survivors], dtype=object)):
        rows = survivors[rows]
        if len({phrases[row] for row in rows}) < 2:
            continue
        # Best first: score, then the phrase named first, then the rank (a stable sort, as pandas').
        ordered = rows[np.lexsort((ranks[rows], phrase_index[rows], -scores[rows]))]
        iou = box_iou_numpy(frame.coordinates[ordered])  # (N, N)
        live = [True] * len(ordered)
        for i, best in enumerate(ordered):
            if not live[i]:
                continue
            for j in range(i + 1, len(ordered)):
                row = ordered[j]
                if live[j] and phrases[row] != phrases[best] and iou[i, j] >= threshold:
                    live[j] = False
                    alive[row] = False
                    removals.append(Removal(STAGE, items[row], "cross_phrase_nms", float(iou[i, j]), threshold,
                                            phrases[row], box_ids[row], f"IoU {float(iou[i, j]):.3f} with "
                                            f"{box_ids[best]} (score {scores[best]:.3f} >= {scores[row]:.3f})"))


def _rows_per_item(items: np.ndarray) -> list[np.ndarray]:
    """Row positions of each item, items in order of first appearance, rows in frame order."""
    codes, uniques = pd.factorize(items)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1])
