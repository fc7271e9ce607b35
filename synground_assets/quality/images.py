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


def hash_bits(hashes) -> np.ndarray:
    """Hex pHashes as unsigned 64-bit integers (exactly: no float on the way, as pandas would take)."""
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def hash_bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, mask) of `max_distance + 1` disjoint bit bands covering the 64-bit hash. Two hashes
    within `max_distance` bits agree exactly on at least one band (pigeonhole), so an index lookup
    by band equality finds every near-duplicate candidate without comparing against every hash."""
    count = min(max_distance + 1, 64)
    widths = [64 // count + (1 if i < 64 % count else 0) for i in range(count)]
    bands, shift = [], 64
    for width in widths:
        shift -= width
        bands.append((shift, (1 << width) - 1))
    return bands


class NearDuplicates:
    """A pool of kept perceptual hashes (earlier shards' first, in key order) that new items are
    checked against one at a time, in order: a new item within `max_distance` bits of a kept one is
    a duplicate, else it joins the pool. The first copy wins, so the earliest shard's item is kept.
    Hamming distances by XOR and popcount over 64-bit integers, vectorised over the pool; the
    earlier shards' hashes are converted once, this shard's kept ones are few and added apart."""

    def __init__(self, earlier_ids, earlier_hashes, max_distance: int):
        self.max_distance = max_distance
        self.earlier_ids = list(earlier_ids)
        self.earlier = hash_bits(earlier_hashes)
        self.new_ids: list[str] = []
        self.new: list[int] = []

    def check(self, item: str, value: str) -> tuple[str, int] | None:
        """(the kept item it repeats, the distance), or None: then the item is kept."""
        current = np.uint64(int(value, 16))
        for ids, pool in ((self.earlier_ids, self.earlier), (self.new_ids, np.array(self.new, dtype=np.uint64))):
            distances = np.bitwise_count(pool ^ current)
            close = np.flatnonzero(distances <= self.max_distance)
            if len(close):
                return ids[close[0]], int(distances[close[0]])
        self.new_ids.append(item)
        self.new.append(int(current))
        return None


def find_near_duplicates(new: list[tuple[str, str]], earlier: list[tuple[str, str]],
                         max_distance: int) -> dict[str, tuple[str, int]]:
    """new, earlier: (item_id, hash) in order. For each new item within `max_distance` bits of an
    earlier item or of a new item kept before it: item_id -> (the kept item_id, distance)."""
    pool = NearDuplicates([item for item, _ in earlier], [h for _, h in earlier], max_distance)
    found = ((item, pool.check(item, value)) for item, value in new)
    return {item: match for item, match in found if match is not None}
