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


def filter_boxes(boxes: pd.DataFrame, sizes: pd.DataFrame,
                 settings: QualitySettings) -> tuple[pd.DataFrame, list[Removal]]:
    """The boxes that pass every filter (re-ranked per phrase, `box_rank` 0 = best kept) and the removals.

    sizes: item_id, width, height of each image."""
    removals: list[Removal] = []
    frame = boxes.merge(sizes[["item_id", "width", "height"]], on="item_id", how="left")
    frame["area_fraction"] = (frame.x1 - frame.x0) * (frame.y1 - frame.y0) / (frame.width * frame.height)
    frame = _drop(frame, frame.score < settings.min_box_score, "min_box_score", "score", settings.min_box_score,
                  removals)
    frame = _drop(frame, frame.area_fraction < settings.min_box_area, "min_box_area", "area_fraction",
                  settings.min_box_area, removals)
    frame = _drop(frame, frame.area_fraction > settings.max_box_area, "max_box_area", "area_fraction",
                  settings.max_box_area, removals)
    if settings.cross_phrase_nms_iou is not None:
        frame = _cross_phrase_nms(frame, settings.cross_phrase_nms_iou, removals)
    if settings.max_boxes_per_phrase is not None:
        order = frame.sort_values(["phrase_id", "score", "box_rank"], ascending=[True, False, True])
        position = order.groupby("phrase_id").cumcount()
        over = pd.Series(False, index=frame.index)
        over[order.index[position >= settings.max_boxes_per_phrase]] = True
        frame = frame.assign(position=position.reindex(frame.index) + 1)
        frame = _drop(frame, over, "max_boxes_per_phrase", "position", settings.max_boxes_per_phrase, removals)
    kept = frame[list(boxes.columns)].copy()
    kept["box_rank"] = kept.sort_values(["score", "box_rank"], ascending=[False, True]).groupby("phrase_id").cumcount()
    return kept.sort_index().reset_index(drop=True), removals


def _drop(frame: pd.DataFrame, mask: pd.Series, name: str, measured: str, threshold: float,
          removals: list[Removal]) -> pd.DataFrame:
    for row in frame[mask].itertuples(index=False):
        removals.append(Removal(STAGE, row.item_id, name, float(getattr(row, measured)), float(threshold),
                                row.phrase_id, row.box_id, f"{measured} {getattr(row, measured):.4g}"))
    return frame[~mask]


def _cross_phrase_nms(frame: pd.DataFrame, threshold: float, removals: list[Removal]) -> pd.DataFrame:
    """Greedy NMS per image over the boxes of different phrases. The frame's columns are read into
    arrays once; per image only its rows are sorted and compared (no per-row pandas access)."""
    if frame.empty:
        return frame
    items, phrases, box_ids = (frame[c].to_numpy() for c in ("item_id", "phrase_id", "box_id"))
    scores, ranks = frame.score.to_numpy(), frame.box_rank.to_numpy()
    # The phrase named first wins a tie: the index ending its id, '<item>:p<index>'.
    phrase_index = frame.phrase_id.str.rsplit(":p", n=1).str[-1].astype(int).to_numpy()
    coordinates = frame[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.float64)
    suppressed: list[int] = []
    for rows in _rows_per_item(items):
        if len(set(phrases[rows])) < 2:
            continue
        # Best first: score, then the phrase named first, then the rank (a stable sort, as pandas').
        ordered = rows[np.lexsort((ranks[rows], phrase_index[rows], -scores[rows]))]
        iou = box_iou(torch.from_numpy(coordinates[ordered])).numpy()  # (N, N)
        alive = [True] * len(ordered)
        for i, best in enumerate(ordered):
            if not alive[i]:
                continue
            for j in range(i + 1, len(ordered)):
                row = ordered[j]
                if alive[j] and phrases[row] != phrases[best] and iou[i, j] >= threshold:
                    alive[j] = False
                    removals.append(Removal(STAGE, items[row], "cross_phrase_nms", float(iou[i, j]), threshold,
                                            phrases[row], box_ids[row], f"IoU {float(iou[i, j]):.3f} with "
                                            f"{box_ids[best]} (score {scores[best]:.3f} >= {scores[row]:.3f})"))
                    suppressed.append(frame.index[row])
    return frame.drop(index=suppressed)


def _rows_per_item(items: np.ndarray) -> list[np.ndarray]:
    """Row positions of each item, items in order of first appearance, rows in frame order."""
    codes, uniques = pd.factorize(items)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1])
