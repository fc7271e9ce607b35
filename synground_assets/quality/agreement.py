"""The agreement filter: drop (image, phrase) pairs the grounding model does not match, and boxes
holding too little of the phrase's GradCAM mass (as a share, or relative to the box's area); the
scores come from `grounding/agreement.py`."""

from __future__ import annotations

from typing import Callable

import pandas as pd
from PIL import Image

from synground_assets.grounding.agreement import score_agreement
from synground_assets.quality.removals import Removal
from synground_assets.quality.settings import AgreementSettings

STAGE = "boxes"


def agreement_filter(boxes: pd.DataFrame, phrase_text: dict[str, str], load_image: Callable[[str], Image.Image],
                     model, settings: AgreementSettings) -> tuple[pd.DataFrame, list[Removal]]:
    """boxes: the box frame (box_id, phrase_id, item_id, x0..y1, score, box_rank); phrase_text:
    phrase_id -> phrase. Returns the boxes kept (re-ranked per phrase) and the removals."""
    if boxes.empty:
        return boxes, []
    pairs = list(boxes.groupby("phrase_id", sort=False))
    images: dict[str, Image.Image] = {}
    for _, pair in pairs:
        item = pair.item_id.iloc[0]
        if item not in images:
            images[item] = load_image(item)
    scores = score_agreement(
        model, [images[pair.item_id.iloc[0]] for _, pair in pairs], [phrase_text[p] for p, _ in pairs],
        [list(pair[["x0", "y0", "x1", "y1"]].itertuples(index=False, name=None)) for _, pair in pairs],
        settings.batch_size,
    )
    removals, dropped = [], []
    for (phrase, pair), score in zip(pairs, scores):
        for row, mass, lift, peak in zip(pair.itertuples(), score.box_mass, score.box_lift, score.box_has_peak):
            if score.itm_probability < settings.min_itm_probability:
                removals.append(Removal(STAGE, row.item_id, "agreement_itm", score.itm_probability,
                                        settings.min_itm_probability, phrase, row.box_id,
                                        f"ITM match probability {score.itm_probability:.3f}"))
            elif mass < settings.min_box_mass:
                removals.append(Removal(STAGE, row.item_id, "agreement_box_mass", mass, settings.min_box_mass,
                                        phrase, row.box_id, f"GradCAM mass in box {mass:.3f}"))
            elif lift < settings.min_box_mass_lift:
                removals.append(Removal(STAGE, row.item_id, "agreement_box_mass_lift", lift, settings.min_box_mass_lift,
                                        phrase, row.box_id,
                                        f"GradCAM mass in box {mass:.3f}, {lift:.2f}x its area share"))
            elif settings.require_peak_in_box and not peak:
                removals.append(Removal(STAGE, row.item_id, "agreement_peak_outside_box", 0.0, 1.0, phrase, row.box_id,
                                        f"the GradCAM peak is outside the box (mass in box {mass:.3f})"))
            else:
                continue
            dropped.append(row.Index)
    kept = boxes.drop(index=dropped).copy()
    kept["box_rank"] = kept.sort_values(["score", "box_rank"], ascending=[False, True]).groupby("phrase_id").cumcount()
    return kept, removals
