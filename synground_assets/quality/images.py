"""Image checks: degenerate (near-constant) images and near-duplicates by perceptual hash.

A safety checker that fires (Stable Diffusion's `nsfw_content_detected`) returns a black image; a
broken VAE or a NaN in the latents returns a flat one. Both are caught here by the pixels' standard
deviation, whether or not the pipeline reports a flag. Near-duplicates are found with `imagehash`'s
pHash (a DCT hash, 64 bits): two images within `max_distance` bits are the same picture for training.
"""

from __future__ import annotations

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


def find_near_duplicates(new: list[tuple[str, str]], earlier: list[tuple[str, str]],
                         max_distance: int) -> dict[str, tuple[str, int]]:
    """new, earlier: (item_id, hash) in order. For each new item within `max_distance` bits of an
    earlier item or of a new item kept before it: item_id -> (the kept item_id, distance). The first
    copy wins, so the earliest shard's item is kept. Hamming distances by XOR and popcount over
    64-bit integers, vectorised over the kept pool."""
    kept_ids = [item for item, _ in earlier]
    kept = np.array([int(h, 16) for _, h in earlier], dtype=np.uint64)
    duplicates: dict[str, tuple[str, int]] = {}
    for item, value in new:
        current = np.uint64(int(value, 16))
        distances = np.bitwise_count(kept ^ current)
        close = np.flatnonzero(distances <= max_distance)
        if len(close):
            duplicates[item] = (kept_ids[close[0]], int(distances[close[0]]))
        else:
            kept_ids.append(item)
            kept = np.append(kept, current)
    return duplicates
