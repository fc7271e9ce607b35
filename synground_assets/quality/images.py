"""Image checks: degenerate (near-constant) images and near-duplicates by perceptual hash.

A safety checker that fires (Stable Diffusion's `nsfw_content_detected`) returns a black image; a
broken VAE or a NaN in the latents returns a flat one. Both are caught here by the pixels' standard
deviation, whether or not the pipeline reports a flag. Near-duplicates are found with `imagehash`'s
pHash (a DCT hash, 64 bits): two images within `max_distance` bits are the same picture for training.
"""

from __future__ import annotations

from typing import Iterable

import imagehash
import numpy as np
from PIL import Image


def pixel_std(image: Image.Image) -> float:
    """Standard deviation of the RGB values (0-255) over the whole image."""
    return float(np.asarray(image.convert("RGB"), dtype=np.float32).std())


def degenerate_reason(image: Image.Image, min_std: float) -> str | None:
    """Why the image is unusable ("near-constant pixels ..."), or None when it is fine."""
    std = pixel_std(image)
    if std < min_std:
        return f"degenerate image: near-constant pixels (std {std:.3g} < {min_std})"
    return None


def perceptual_hash(image: Image.Image) -> str:
    """64-bit pHash as 16 hex digits (what the images table stores)."""
    return str(imagehash.phash(image.convert("RGB")))


def hash_distance(a: str, b: str) -> int:
    return imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b)


def first_near_duplicate(candidate: str, earlier: Iterable[tuple[str, str]], max_distance: int) -> tuple[str, int] | None:
    """(item_id, distance) of the first earlier (item_id, hash) within `max_distance` bits, else None."""
    target = imagehash.hex_to_hash(candidate)
    for item, value in earlier:
        distance = target - imagehash.hex_to_hash(value)
        if distance <= max_distance:
            return item, int(distance)
    return None
