"""`images`: one synthetic image per description, from the recipe's generator (the paper's Psi_g).

Failures are never published: an image the generator's safety checker flagged or a degenerate
(near-constant) one is regenerated with the next seed while the recipe's `regenerate_attempts` allow,
each failed attempt recorded as a removal, and skipped with its reason when none is left.
Near-duplicates of an image of this shard or of an earlier shard (perceptual hash) are removed the
same way, keeping the earliest item.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import pandas as pd

from synground_assets.config.recipes import Recipe
from synground_assets.pipeline.batching import Logger, Progress, Skipped, batches, progress_or_none, run_batched
from synground_assets.pipeline.result import TABLE, StageResult, quality_lineage
from synground_assets.pipeline.writing import ImageFiles, InMemoryImages
from synground_assets.quality.images import (
    degenerate_reason,
    find_near_duplicates,
    hash_bits,
    perceptual_hash,
    pixel_std,
)
from synground_assets.quality.removals import Removal
from synground_assets.quality.settings import QualitySettings
from synground_assets.records.items import derive_seed
from synground_assets.records.previews import draw_triplets
from synground_assets.roles.base import GeneratedImage, ImageGenerator, RoleProvider

IMAGE_FOLDER = "images"
PREVIEW_ITEMS = 8
STAGE = "images"
TABLE_COLUMNS = ["item_id", "file", "image_path", "width", "height", "image_seed", "phash"]
BOX_COLUMNS = ["item_id", "phrase", "x0", "y0", "x1", "y1"]

Accepted = dict[str, tuple[GeneratedImage, int]]  # item -> (the usable output, the seed that drew it)
# this shard's hashes -> item_id, phash of earlier shards' images that may be near-duplicates (at least the
# earliest within the distance of each hash: the first copy is kept)
EarlierHashes = Callable[[list[str]], pd.DataFrame]


def image_failure(output: GeneratedImage, settings: QualitySettings, attempt: int, seed: int) -> Removal | None:
    """The removal of a flagged or degenerate image (item_id left blank), or None when it can be used."""
    detail = f"attempt {attempt}, seed {seed}: "
    if output.flagged:
        return Removal(STAGE, "", "safety_checker", 1.0, None,
                       detail=detail + "the generator's safety checker flagged the image (nsfw_content_detected)")
    reason = degenerate_reason(output.image, settings.min_image_std)
    if reason:
        return Removal(STAGE, "", "degenerate_image", pixel_std(output.image), settings.min_image_std,
                       detail=detail + reason)
    return None


def generate_checked(generator: ImageGenerator, pairs: Sequence[tuple[str, str]], seeds: dict[str, int],
                     batch_size: int, settings: QualitySettings, progress: Progress | None = None,
                     accept: Callable[[str, GeneratedImage, int], None] | None = None,
                     ) -> tuple[Accepted, list[Skipped], list[Removal]]:
    """pairs: (item, prompt). Generate, check and regenerate with the next seed (seed + attempt)
    while attempts are left. `accept(item, output, seed)` is called for each usable image as soon
    as its batch is checked (first attempts first, then the retries). Returns {item: (output,
    seed)} in that order, the skipped (item, reason) pairs and the removals (one per failed attempt)."""
    accepted: Accepted = {}
    skipped: list[Skipped] = []
    removals: list[Removal] = []
    pending = list(pairs)
    for attempt in range(settings.regenerate_attempts + 1):
        retry = []
        for batch in batches(pending, batch_size):
            generated, failed = run_batched(
                batch, batch_size,
                lambda chunk, attempt=attempt: generator.generate([text for _, text in chunk],
                                                                  [seeds[item] + attempt for item, _ in chunk]),
                lambda pair: pair[0], progress if attempt == 0 else None,
            )
            skipped += failed
            for (item, text), output in zip(batch, generated):
                if output is None:
                    continue
                failure = image_failure(output, settings, attempt, seeds[item] + attempt)
                if failure is None:
                    accepted[item] = (output, seeds[item] + attempt)
                    if accept is not None:
                        accept(item, output, seeds[item] + attempt)
                else:
                    removals.append(replace(failure, item_id=item))
                    retry.append((item, text))
        pending = retry
    for item, _ in pending:
        last = next(r for r in reversed(removals) if r.item_id == item)
        skipped.append((item, f"{last.detail} (no usable image after {settings.regenerate_attempts + 1} attempt(s))"))
    return accepted, skipped, removals


def dedup_images(hashes: dict[str, str], earlier: EarlierHashes, settings: QualitySettings) -> list[Removal]:
    """hashes: item -> pHash of the accepted images, in the order they were accepted. The
    near-duplicates of an earlier shard's image or of an image accepted before them (the first kept)."""
    if settings.image_dedup_distance is None or not hashes:
        return []
    found = earlier(list(hashes.values()))
    duplicates = find_near_duplicates(list(hashes.items()), list(zip(found.item_id, found.phash)),
                                      settings.image_dedup_distance)
    return [Removal(STAGE, item, "near_duplicate_image", float(distance), float(settings.image_dedup_distance),
                    detail=f"perceptual hash {distance} bits from {kept}")
            for item, (kept, distance) in duplicates.items()]


def draw_images(recipe: Recipe, shard: str, descriptions: pd.DataFrame, suite: RoleProvider, earlier: EarlierHashes,
                log: Logger | None = None, files: ImageFiles | None = None) -> StageResult:
    """descriptions: item_id, description of this shard; earlier(hashes): item_id, phash of the
    earlier shards' images that may be near-duplicates of these (asked once, when the shard is drawn).
    PNG files plus a table (item, file, size, seed, perceptual hash); GLIGEN recipes also keep the
    layout each image was drawn in (`layout.parquet`), procedural worlds their ground truth.

    `files` takes each accepted image as soon as its batch is checked (a background writer: the
    files are written while the next batch is drawn) and gives back the duplicates; without it the
    images are returned in `StageResult.images`."""
    in_memory = InMemoryImages() if files is None else None
    files = files if files is not None else in_memory
    generator = suite.image_generator(recipe.name)
    settings = recipe.quality
    seeds = {item: derive_seed("image", item) for item in descriptions.item_id}
    pairs = list(zip(descriptions.item_id, descriptions.description))
    hashes: dict[str, str] = {}

    def accept(item: str, output: GeneratedImage, seed: int) -> None:
        hashes[item] = perceptual_hash(output.image)  # once per image: dedup and the table use it
        files.put(image_file(item), output.image)

    # 1. Generate, with the safety flag and degenerate-image checks (and retries).
    progress = progress_or_none(log, f"images {recipe.name}|{shard}", len(pairs))
    accepted, skipped, removals = generate_checked(generator, pairs, seeds, recipe.roles["image_generator"].batch_size,
                                                   settings, progress, accept)
    # 2. Near-duplicates of earlier shards' images and of this shard's earlier items: taken back.
    duplicates = dedup_images(hashes, earlier, settings)
    removed = {r.item_id for r in duplicates}
    for item in removed:
        files.discard(image_file(item))
    # 3. The table of what is left, in description order.
    rows, layout, truth, preview = [], [], [], []
    for item, text in pairs:
        if item not in accepted or item in removed:
            continue
        output, seed = accepted[item]
        file = image_file(item)
        rows.append((item, file, f"{recipe.name}/images/{shard}/{file}", *output.image.size, seed, hashes[item]))
        layout += _box_rows(item, output.layout)
        truth += _box_rows(item, output.ground_truth)
        if len(preview) < PREVIEW_ITEMS:
            preview.append(draw_triplets(output.image, output.layout or [(text, None)], mark_missing=False))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    tables = {TABLE: table}
    if recipe.box_source == "gligen":  # the boxes stage reads it, even when no item has a layout
        tables["layout.parquet"] = pd.DataFrame(layout, columns=BOX_COLUMNS)
    if truth:
        tables["ground_truth.parquet"] = pd.DataFrame(truth, columns=BOX_COLUMNS)
    every_removal = removals + duplicates
    return StageResult(
        info=generator.info, tables=tables, images=dict(in_memory or {}), removals=every_removal, skipped=skipped,
        preview=preview, counts={"images": len(table), "removed_images": len(removed)},
        # The lineage rows keep the pHash: the index answers the next shards' dedup (resources/dedup_index.py).
        lineage={"images": table.drop(columns=["file"]).assign(phash_bits=hash_bits(table.phash)),
                 **quality_lineage(STAGE, "images", len(pairs), len(table), every_removal)},
    )


def image_file(item: str) -> str:
    """The PNG of an item inside the images shard: `images/<item index>.png`."""
    return f"{IMAGE_FOLDER}/{item.rsplit(':', 1)[-1]}.png"


def _box_rows(item: str, pairs) -> list[tuple]:
    return [(item, phrase, *box) for phrase, box in pairs or []]
