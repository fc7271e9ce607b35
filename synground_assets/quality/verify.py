"""Crop verification: a judge looks at each kept box's crop and says whether it shows the phrase.

The crop is the box enlarged by `context` of its width (height) on the left and right (top and
bottom), then clipped to the image: a little surrounding helps a judge tell "a cat" from "a cat's
ear", and clipping keeps a box at the image edge from reading pixels that do not exist.

A judge is any callable `judge(crops, phrases) -> [(P(yes), P(no)), ...]`: a VLM's next-token
probabilities of the yes and no words (adapters/verifier.py), or a grounding model's ITM head
(P(match), 1 - P(match)). A box is kept when P(yes) >= P(no) + margin, ROVI's rule with its margin
0.2 as the default (ROVI, ICCV 2025; CihangPeng/ROVI@3615aa1 vlm_cross_checking/cross_checking.py:213,218):
VLMs say "yes" too readily, so a bare P(yes) > P(no) keeps too much. Every removal keeps both
probabilities (value: P(yes) - P(no), threshold: the margin, detail: the two probabilities).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pandas as pd
from PIL import Image

from synground_assets.quality.removals import Removal
from synground_assets.quality.settings import VerifySettings

STAGE = "boxes"
Judge = Callable[[Sequence[Image.Image], Sequence[str]], list[tuple[float, float]]]
# One row per judged box: what the judge measured, kept or not (the `box_verdicts` lineage table).
VERDICT_COLUMNS = ["box_id", "phrase_id", "item_id", "p_yes", "p_no", "margin", "crop_x0", "crop_y0", "crop_x1",
                   "crop_y1", "kept"]


def crop_box(box: tuple[float, float, float, float], size: tuple[int, int],
             context: float) -> tuple[int, int, int, int]:
    """The box enlarged by `context` x its side on each side, on whole pixels (outwards), clipped to
    the image (width, height); at least one pixel wide and high."""
    x0, y0, x1, y1 = box
    width, height = size
    dx, dy = (x1 - x0) * context, (y1 - y0) * context
    left = min(max(math.floor(x0 - dx), 0), width - 1)
    top = min(max(math.floor(y0 - dy), 0), height - 1)
    right = max(min(math.ceil(x1 + dx), width), left + 1)
    bottom = max(min(math.ceil(y1 + dy), height), top + 1)
    return left, top, right, bottom


def judge_batched(judge: Judge, crops: Sequence[Image.Image], phrases: Sequence[str],
                  batch_size: int) -> list[tuple[float, float]]:
    """The judge over batches of `batch_size` crops, in order."""
    verdicts: list[tuple[float, float]] = []
    for start in range(0, len(crops), batch_size):
        chunk = judge(crops[start:start + batch_size], phrases[start:start + batch_size])
        if len(chunk) != len(crops[start:start + batch_size]):
            raise RuntimeError(f"the verifier returned {len(chunk)} verdicts for "
                               f"{len(crops[start:start + batch_size])} crops")
        verdicts += chunk
    return verdicts


def verify_filter(boxes: pd.DataFrame, phrase_text: dict[str, str], load_image: Callable[[str], Image.Image],
                  judge: Judge, settings: VerifySettings, name: str = "verify"
                  ) -> tuple[pd.DataFrame, list[Removal], pd.DataFrame]:
    """boxes: the box frame (box_id, phrase_id, item_id, x0..y1, score, box_rank). Returns the boxes
    kept (re-ranked per phrase), the removals and one verdict row per box judged."""
    if boxes.empty:
        return boxes, [], pd.DataFrame(columns=VERDICT_COLUMNS)
    images: dict[str, Image.Image] = {}
    crops, phrases, windows = [], [], []
    for row in boxes.itertuples(index=False):
        if row.item_id not in images:
            images[row.item_id] = load_image(row.item_id)
        image = images[row.item_id]
        window = crop_box((row.x0, row.y0, row.x1, row.y1), image.size, settings.context)
        windows.append(window)
        crops.append(image.crop(window))
        phrases.append(phrase_text[row.phrase_id])
    verdicts = judge_batched(judge, crops, phrases, settings.batch_size)
    removals, keep, rows = [], [], []
    for row, window, (p_yes, p_no) in zip(boxes.itertuples(index=False), windows, verdicts):
        passed = p_yes >= p_no + settings.margin
        keep.append(passed)
        rows.append((row.box_id, row.phrase_id, row.item_id, p_yes, p_no, settings.margin, *window, passed))
        if not passed:
            removals.append(Removal(STAGE, row.item_id, f"{name}_crop", p_yes - p_no, settings.margin, row.phrase_id,
                                    row.box_id, f"P(yes) {p_yes:.4f}, P(no) {p_no:.4f} on the crop {window}: "
                                                f"P(yes) - P(no) below the margin {settings.margin}"))
    kept = boxes.loc[keep].copy()
    kept["box_rank"] = kept.sort_values(["score", "box_rank"], ascending=[False, True]).groupby("phrase_id").cumcount()
    return kept, removals, pd.DataFrame(rows, columns=VERDICT_COLUMNS)
