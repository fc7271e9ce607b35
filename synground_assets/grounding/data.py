"""Triplets for fine-tuning: (image, phrase, boxes), one phrase per sample, with their augmentations.

Images are read from disk when a batch needs them (never all held in memory). Augmentations are
drawn from a per-sample seed, so a batch is the same whether training runs straight through or
resumes from a checkpoint, on any number of ranks and loader workers (grounding/loader.py). A
horizontal flip mirrors the boxes and swaps "left"/"right" in the phrase, so the pair stays true.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageEnhance, ImageOps

Box = tuple[float, float, float, float]
_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclass
class Triplet:
    """One phrase grounded in one image. `boxes_xyxy`: pixels of the original image, x1/y1
    exclusive; one box for synthetic triplets, possibly several for a Flickr30k entity."""

    image: str | os.PathLike | Image.Image
    phrase: str
    boxes_xyxy: list[Box]
    item_id: str | None = None

    def __post_init__(self):
        if not self.boxes_xyxy:
            raise ValueError(f"triplet {self.item_id or self.phrase!r} has no box")
        self.boxes_xyxy = [tuple(float(v) for v in box) for box in self.boxes_xyxy]
        for box in self.boxes_xyxy:
            if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"triplet {self.item_id or self.phrase!r}: box {box} is not (x0, y0, x1, y1) "
                                 "with x1 > x0, y1 > y0")

    def load_image(self) -> Image.Image:
        if isinstance(self.image, Image.Image):
            return self.image.convert("RGB")
        with Image.open(self.image) as image:
            return image.convert("RGB")

    @property
    def image_key(self) -> str:
        """Identifies the image, so pairs of one image count as positives for each other."""
        if isinstance(self.image, Image.Image):
            return f"pil:{id(self.image)}"
        return str(Path(self.image))


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations run, with AMC's probabilities. Resizing to the model's input size always
    happens (in the model's preprocessing)."""

    horizontal_flip: bool = False
    colour_jitter: bool = True
    grayscale: bool = True
    flip_probability: float = 0.5
    colour_jitter_probability: float = 0.5
    colour_jitter_strength: float = 0.4  # brightness/contrast/saturation factors in [1 - s, 1 + s]
    grayscale_probability: float = 0.2


def swap_left_right(phrase: str) -> str:
    """'the dog to the left of a Right...' -> 'the dog to the right of a Left...' (case kept)."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, phrase)


def augment(
    image: Image.Image, phrase: str, boxes_xyxy: Sequence[Box], rng: random.Random, augmentation: Augmentation
) -> tuple[Image.Image, str, list[Box]]:
    boxes = list(boxes_xyxy)
    if augmentation.horizontal_flip and rng.random() < augmentation.flip_probability:
        width = image.width
        image = ImageOps.mirror(image)
        phrase = swap_left_right(phrase)
        boxes = [(width - x1, y0, width - x0, y1) for x0, y0, x1, y1 in boxes]
    if augmentation.colour_jitter and rng.random() < augmentation.colour_jitter_probability:
        strength = augmentation.colour_jitter_strength
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
    if augmentation.grayscale and rng.random() < augmentation.grayscale_probability:
        image = ImageOps.grayscale(image).convert("RGB")
    return image, phrase, boxes


def box_mask(boxes_xyxy: Sequence[Box], image_size: tuple[int, int], mask_size: tuple[int, int]) -> torch.Tensor:
    """(height, width) 0/1 mask at `mask_size` = (height, width) of the union of boxes given in an
    image of `image_size` = (width, height). A mask pixel is inside when its centre, mapped back to
    the image, is inside a box (the pointing game's rule)."""
    width, height = image_size
    rows, cols = mask_size
    ys = (torch.arange(rows, dtype=torch.float32) + 0.5) * height / rows  # (rows,)
    xs = (torch.arange(cols, dtype=torch.float32) + 0.5) * width / cols  # (cols,)
    mask = torch.zeros(rows, cols)
    for x0, y0, x1, y1 in boxes_xyxy:
        inside_y = (ys >= y0) & (ys < y1)
        inside_x = (xs >= x0) & (xs < x1)
        mask = torch.maximum(mask, (inside_y[:, None] & inside_x[None, :]).float())
    return mask


MASK_STYLES = ("pixel-centre", "amc")


def amc_box_mask(boxes_xyxy: Sequence[Box], image_size: tuple[int, int], resolution: int,
                 mask_size: int | None = None) -> torch.Tensor:
    """(mask_size, mask_size) 0/1-valued mask as AMC-grounding makes it (dataset/caption_dataset.py):
    each box clamped to the image and truncated to integer pixels, drawn at the image's own size;
    resized with the image to the training resolution (albumentations' Resize, nearest neighbour
    for masks: source pixel floor(i * size / resolution)); then bilinear with align_corners=True to
    the mask size (default the resolution, where it changes nothing)."""
    width, height = image_size
    mask = torch.zeros(height, width)
    for x0, y0, x1, y1 in boxes_xyxy:
        x0, y0 = int(min(width - 1, max(0, x0))), int(min(height - 1, max(0, y0)))
        x1, y1 = int(min(width, max(1, x1))), int(min(height, max(1, y1)))
        mask[y0:y1, x0:x1] = 1
    rows = (torch.arange(resolution) * height // resolution).clamp(max=height - 1)
    cols = (torch.arange(resolution) * width // resolution).clamp(max=width - 1)
    mask = mask[rows][:, cols]  # (resolution, resolution)
    size = mask_size or resolution
    return torch.nn.functional.interpolate(mask[None, None], size=(size, size), mode="bilinear",
                                           align_corners=True)[0, 0]


def training_box_mask(style: str, boxes_xyxy: Sequence[Box], image_size: tuple[int, int],
                      resolution: int) -> torch.Tensor:
    """The box mask a training step compares the map with, at the input resolution."""
    if style == "amc":
        return amc_box_mask(boxes_xyxy, image_size, resolution)
    if style == "pixel-centre":
        return box_mask(boxes_xyxy, image_size, (resolution, resolution))
    raise ValueError(f"mask style must be one of {', '.join(MASK_STYLES)} but is {style!r}")
