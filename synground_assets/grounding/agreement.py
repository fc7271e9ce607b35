"""Agreement of a grounding model with a triplet: does the model see the phrase, and where the box is?

For each (image, phrase) pair: the model's ITM match probability, softmax(itm_logits)[:, 1]; for each
of the pair's boxes: the share of the phrase's GradCAM mass (the map of `gradcam.py`, upsampled
bilinearly to the image) that falls inside the box, with the pointing game's pixel-centre rule, and
that share divided by the box's share of the image (the mass *lift*: 1.0 is what a box of that size
gets from a flat map, so it compares small and large boxes fairly), and whether the map's peak
(the pointing game's point) lies in the box. A box the detector put on the wrong object gets little
mass; a phrase the image does not show gets a low match probability. Batched; the model is loaded
once by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from synground_assets.grounding.gradcam import cross_attention_gradcam, upsample_cam
from synground_assets.grounding.model import GroundingModel
from synground_assets.grounding.pointing_game import point_in_box

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PairAgreement:
    itm_probability: float
    box_mass: list[float]  # share of the map inside each box of the pair, in order
    box_lift: list[float]  # box_mass / (box area / image area)
    box_has_peak: list[bool]  # the map's first maximal pixel (the pointing game's point) is in the box


def box_mass(cam: torch.Tensor, boxes_xyxy: Sequence[Box]) -> list[float]:
    """Share of a non-negative (height, width) map inside each box (pixel centres in [x0, x1) x [y0, y1))."""
    height, width = cam.shape
    centres_x = torch.arange(width, dtype=torch.float32) + 0.5  # (W,)
    centres_y = torch.arange(height, dtype=torch.float32) + 0.5  # (H,)
    total = cam.sum().clamp(min=1e-12)
    shares = []
    for x0, y0, x1, y1 in boxes_xyxy:
        inside_x = (centres_x >= x0) & (centres_x < x1)
        inside_y = (centres_y >= y0) & (centres_y < y1)
        shares.append(float(cam[inside_y][:, inside_x].sum() / total))
    return shares


def score_agreement(
    model: GroundingModel,
    images: Sequence[Image.Image],
    phrases: Sequence[str],
    boxes: Sequence[Sequence[Box]],
    batch_size: int = 32,
) -> list[PairAgreement]:
    """One `PairAgreement` per (image, phrase, boxes) pair, in order."""
    if not len(images) == len(phrases) == len(boxes):
        raise ValueError(f"got {len(images)} images, {len(phrases)} phrases and {len(boxes)} box lists")
    was_training = model.training
    model.eval()
    scores: list[PairAgreement] = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            inputs = model.preprocess(list(images[chunk]), list(phrases[chunk]))
            explained = cross_attention_gradcam(model, inputs)  # cam (b, rows, cols), logits (b, 2)
            probabilities = explained.itm_logits.float().softmax(dim=-1)[:, 1].cpu()  # (b,)
            for cam, probability, image, item_boxes in zip(explained.cam.float().cpu(), probabilities,
                                                           images[chunk], boxes[chunk]):
                full = upsample_cam(cam[None], (image.height, image.width))[0].clamp(min=0)  # (H, W)
                masses = box_mass(full, item_boxes)
                areas = [(x1 - x0) * (y1 - y0) / (image.width * image.height) for x0, y0, x1, y1 in item_boxes]
                lifts = [mass / area if area > 0 else 0.0 for mass, area in zip(masses, areas)]
                index = int(torch.argmax(full.flatten()))  # the first maximum, row-major
                point = (index % image.width, index // image.width)
                scores.append(PairAgreement(float(probability), masses, lifts,
                                            [point_in_box(point, box) for box in item_boxes]))
    finally:
        model.train(was_training)
    return scores
