"""`boxes`: each phrase boxed in its synthetic image by the detector (Psi_d), by several detectors
whose boxes are fused and kept where enough of them agree (an ensemble: `roles.detector` a list,
quality/ensemble.py), or taken from the GLIGEN layout the image was drawn from (`box_source: gligen`);
then curated by the recipe's box filters and, when it has them, its agreement filter and its crop
verification (quality/verify.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from synground_assets.config.recipes import Recipe
from synground_assets.pipeline.batching import Logger, Skipped, prepared_ahead, progress_or_none, run_batched
from synground_assets.pipeline.images import PREVIEW_ITEMS
from synground_assets.pipeline.result import TABLE, StageResult, quality_lineage
from synground_assets.quality.agreement import agreement_filter
from synground_assets.quality.boxes import filter_boxes
from synground_assets.quality.ensemble import PROPOSAL_COLUMNS, fuse_proposals
from synground_assets.quality.removals import Removal
from synground_assets.quality.settings import EnsembleSettings
from synground_assets.quality.verify import verify_filter
from synground_assets.records.items import box_id
from synground_assets.records.previews import draw_triplets
from synground_assets.roles.base import AdapterInfo, Detection, RoleProvider
from synground_assets.roles.phrases import phrase_problem

STAGE = "boxes"
BOX_COLUMNS = ["box_id", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score", "box_rank"]


@dataclass(frozen=True)
class BoxInputs:
    """What the boxes stage reads of its shard: the published images and phrases."""

    images: pd.DataFrame  # the images table: item_id, file, width, height, ...
    phrases: pd.DataFrame  # the phrases table, kept and dropped rows
    image_folder: Path  # the images shard's folder; `file` is relative to it
    layout: pd.DataFrame | None = None  # GLIGEN recipes: item_id, phrase, x0..y1 the image was drawn in


def box_phrases(recipe: Recipe, shard: str, inputs: BoxInputs, suite: RoleProvider,
                log: Logger | None = None) -> StageResult:
    """One row per box (phrases without a box have none); the triplets are <image, phrase, box>."""
    phrase_table, unusable = usable_phrases(inputs.phrases.loc[inputs.phrases["kept"]])
    per_item = phrases_per_item(phrase_table)
    work = [(row, per_item[row.item_id]) for row in inputs.images.itertuples(index=False) if row.item_id in per_item]
    batch_size = recipe.roles["detector"].batch_size
    source = _box_source(recipe, inputs, suite)
    progress = progress_or_none(log, f"boxes {recipe.name}|{shard}", len(work))
    rows, skipped, preview = [], [], []
    # The next batch's images are read from disk while the detector works on this one, and the
    # preview tiles (the first PREVIEW_ITEMS items) are drawn from the images in memory meanwhile.
    with ThreadPoolExecutor(1, thread_name_prefix="box-preview") as drawing:
        for batch, pictures in prepared_ahead(work, batch_size, source.prepare):
            detections, failed = run_batched(batch, batch_size,
                                             lambda chunk, pictures=pictures: source.call(chunk, pictures),
                                             lambda pair: pair[0].item_id, progress)
            skipped += failed
            for (row, item_phrases), found in zip(batch, detections):
                if found is None:
                    continue
                if source.ensemble:  # (detector, detection) pairs: proposals, fused below
                    rows += [(name, item_phrases.phrase_ids[d.phrase_index], row.item_id, *map(float, d.box_xyxy),
                              float(d.score)) for name, d in found]
                    found = [d for _, d in found]
                ranked = sorted(found, key=lambda d: (d.phrase_index, -d.score))
                if not source.ensemble:
                    rows += _box_rows(row.item_id, item_phrases, ranked)
                if len(preview) < PREVIEW_ITEMS:
                    picture = pictures[row.item_id] if row.item_id in pictures else \
                        Image.open(inputs.image_folder / row.file)
                    preview.append(drawing.submit(_preview_tile, picture, item_phrases, ranked))
        preview = [tile.result() for tile in preview]
    extra_lineage, fused_removals = {}, []
    if source.ensemble:
        proposals = pd.DataFrame(rows, columns=PROPOSAL_COLUMNS)
        detected, extra_lineage["box_proposals"], fused_removals = fuse_proposals(
            proposals, source.ensemble, _ensemble_settings(recipe))
        detected_count = len(proposals)
    else:
        detected = pd.DataFrame(rows, columns=BOX_COLUMNS)
        detected_count = len(detected)
    table, removals, verdicts = curate(recipe, detected, inputs.images, phrase_table, inputs.image_folder, suite)
    removals = fused_removals + removals
    if verdicts is not None:
        extra_lineage["box_verdicts"] = verdicts
    # An ensemble's thresholds are its detectors' own, in `box_proposals` and the settings column.
    options = {} if source.ensemble else recipe.roles["detector"].options
    counts = {"boxes": len(table), "phrases": len(phrase_table), "phrases_with_box": table.phrase_id.nunique()}
    return StageResult(
        info=source.info, tables={TABLE: table}, removals=removals, skipped=unusable + skipped, preview=preview,
        lineage={"boxes": table.assign(box_threshold=options.get("box_threshold"),
                                       text_threshold=options.get("text_threshold")),
                 "shard_yields": pd.DataFrame([counts]), **extra_lineage,
                 **quality_lineage(STAGE, "boxes", detected_count, len(table), removals)},
        counts={**counts, "detected_boxes": detected_count},
    )


def _ensemble_settings(recipe: Recipe) -> EnsembleSettings:
    return recipe.quality.ensemble or EnsembleSettings()


@dataclass(frozen=True)
class ItemPhrases:
    """One item's usable phrases, in table order (a detection's `phrase_index` points into them)."""

    phrase_ids: list[str]
    phrases: list[str]


def phrases_per_item(phrase_table: pd.DataFrame) -> dict[str, ItemPhrases]:
    """item_id -> its phrases, read in one pass (no sub-frame per item)."""
    per_item: dict[str, ItemPhrases] = {}
    columns = (phrase_table[c].tolist() for c in ("item_id", "phrase_id", "phrase"))
    for item, pid, phrase in zip(*columns):
        found = per_item.setdefault(item, ItemPhrases([], []))
        found.phrase_ids.append(pid)
        found.phrases.append(phrase)
    return per_item


Work = tuple[Any, ItemPhrases]  # (a row of the images table, that item's usable phrases)


@dataclass(frozen=True)
class BoxSource:
    """Who boxes the phrases: `prepare(batch)` reads what the call needs ({item: image}), `call(batch,
    prepared)` returns each item's detections."""

    info: AdapterInfo
    prepare: Callable[[Sequence[Work]], dict[str, Image.Image]]
    call: Callable[[Sequence[Work], dict[str, Image.Image]], list[list[Any]]]
    # An ensemble's detector names: `call` then gives (name, Detection) pairs, not Detections.
    ensemble: list[str] | None = None


def _box_source(recipe: Recipe, inputs: BoxInputs, suite: RoleProvider) -> BoxSource:
    if recipe.box_source == "gligen":  # no detector to load, no image to read: the layout the image was drawn in
        generator = recipe.roles["image_generator"]
        return BoxSource(
            AdapterInfo("gligen-layout", generator.model or "", generator.revision or "", {"box_source": "gligen"}),
            prepare=lambda batch: {},
            call=lambda batch, _: [layout_detections(inputs.layout, row.item_id, ph.phrases) for row, ph in batch])
    def read_images(batch) -> dict[str, Image.Image]:
        return {row.item_id: read_rgb(inputs.image_folder / row.file) for row, _ in batch}

    if recipe.ensemble:
        return _ensemble_source(recipe, suite.detectors(recipe), read_images)
    detector = suite.detector(recipe.name)

    def detect(batch, pictures):
        return detector.detect([pictures[row.item_id] for row, _ in batch], [ph.phrases for _, ph in batch])

    return BoxSource(detector.info, read_images, detect)


def _ensemble_source(recipe: Recipe, detectors: list[tuple[str, Any]], read_images) -> BoxSource:
    """Every detector on each batch of images (read once), in recipe order; each detection with the
    name of the detector that proposed it. The detectors stay loaded together (adapters/suite.py)."""
    settings = _ensemble_settings(recipe)

    def detect(batch, pictures):
        images, phrases = [pictures[row.item_id] for row, _ in batch], [ph.phrases for _, ph in batch]
        per_item: list[list[tuple[str, Detection]]] = [[] for _ in batch]
        for name, detector in detectors:
            for found, detections in zip(per_item, detector.detect(images, phrases), strict=True):
                found += [(name, detection) for detection in detections]
        return per_item

    members = [{"name": name, "adapter": d.info.adapter, "model_id": d.info.model_id, "revision": d.info.revision,
                "settings": d.info.settings} for name, d in detectors]
    info = AdapterInfo("ensemble", " + ".join(d.info.model_id or d.info.adapter for _, d in detectors), "",
                       {"detectors": members, "min_agreeing": settings.min_agreeing, "iou": settings.iou,
                        "fusion": settings.fusion})
    return BoxSource(info, read_images, detect, ensemble=[name for name, _ in detectors])


def read_rgb(path: Path) -> Image.Image:
    """An image decoded from disk in RGB; an RGB file (every image the stage draws) is not copied again."""
    image = Image.open(path)
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def layout_detections(layout: pd.DataFrame, item: str, phrases: list[str]) -> list[Detection]:
    """GLIGEN: a phrase's box is the layout box it was drawn in (matched case-insensitively)."""
    boxes = {p.lower(): (x0, y0, x1, y1) for p, x0, y0, x1, y1 in
             layout[layout.item_id == item][["phrase", "x0", "y0", "x1", "y1"]].itertuples(index=False)}
    return [Detection(i, boxes[p.lower()], 1.0) for i, p in enumerate(phrases) if p.lower() in boxes]


def _box_rows(item: str, item_phrases: ItemPhrases, ranked: list[Detection]) -> list[tuple]:
    """One row per detection, ranked per phrase (0 = its best box), in (phrase, score) order."""
    rows, rank = [], {}
    for detection in ranked:
        phrase_id = item_phrases.phrase_ids[detection.phrase_index]
        rank[detection.phrase_index] = rank.get(detection.phrase_index, -1) + 1
        rows.append((box_id(phrase_id, rank[detection.phrase_index]), phrase_id, item,
                     *map(float, detection.box_xyxy), float(detection.score), rank[detection.phrase_index]))
    return rows


def _preview_tile(image: Image.Image, item_phrases: ItemPhrases, ranked: list[Detection]) -> Image.Image:
    """The image with each phrase's best box (phrases without one marked)."""
    best: dict[int, tuple] = {}
    for detection in ranked:
        best.setdefault(detection.phrase_index, detection.box_xyxy)
    return draw_triplets(image, [(p, best.get(i)) for i, p in enumerate(item_phrases.phrases)])


def curate(recipe: Recipe, detected: pd.DataFrame, image_table: pd.DataFrame, phrase_table: pd.DataFrame,
           image_folder: Path, suite: RoleProvider) -> tuple[pd.DataFrame, list[Removal], pd.DataFrame | None]:
    """The recipe's box filters, then its agreement filter and its crop verification when it has
    them: (kept boxes, removals, the verifier's verdicts or None). A judge is asked of the suite
    only when there are boxes to judge."""
    settings = recipe.quality
    kept, removals = filter_boxes(detected, image_table, settings)
    files = dict(zip(image_table.item_id, image_table.file))
    phrase_text = dict(zip(phrase_table.phrase_id, phrase_table.phrase))

    def load_image(item: str) -> Image.Image:
        return read_rgb(image_folder / files[item])

    if settings.agreement is not None and len(kept):
        kept, disagreements = agreement_filter(kept, phrase_text, load_image,
                                               suite.agreement_model(recipe.name, settings.agreement),
                                               settings.agreement)
        removals += disagreements
    verdicts = None
    if settings.verify is not None and len(kept):
        kept, rejected, verdicts = verify_filter(kept, phrase_text, load_image,
                                                 suite.verifier(recipe.name, settings.verify), settings.verify)
        removals += rejected
    return kept.reset_index(drop=True), removals, verdicts


def usable_phrases(kept: pd.DataFrame) -> tuple[pd.DataFrame, list[Skipped]]:
    """A kept phrase that cannot be grounded (blank, punctuation: a table written by hand or by an
    older version) is not sent to the detector; it becomes a recorded skip, never a silent gap."""
    problems = [phrase_problem(phrase) for phrase in kept.phrase.tolist()]
    usable = np.array([problem is None for problem in problems], dtype=bool)
    bad = kept[~usable]
    reasons = [problem for problem in problems if problem is not None]
    skipped = [(item, f"phrase {pid} {phrase!r}: {problem}")
               for item, pid, phrase, problem in zip(bad.item_id, bad.phrase_id, bad.phrase, reasons)]
    return kept[usable], skipped
