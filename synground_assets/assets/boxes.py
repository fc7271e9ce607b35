"""`boxes`: each phrase boxed in its synthetic image by the detector (Psi_d), or taken from the
GLIGEN layout the image was drawn from (`box_source: gligen`)."""

import dagster as dg
import pandas as pd
from PIL import Image

from synground_assets.assets.images import PREVIEW_ITEMS
from synground_assets.assets.quality_report import quality_metadata
from synground_assets.assets.stage import (
    Progress,
    ShardOutput,
    generation_asset,
    materialize_shards,
    run_batched,
    summary_metadata,
)
from synground_assets.items import box_id
from synground_assets.partitions import split_shard_key
from synground_assets.previews import contact_sheet, draw_triplets, image_markdown
from synground_assets.quality.agreement import agreement_filter
from synground_assets.quality.boxes import filter_boxes
from synground_assets.quality.removals import quality_report, removals_frame
from synground_assets.quality.settings import QualitySettings
from synground_assets.recipes import recipe_book
from synground_assets.resources import ModelSuiteResource, StoreResource
from synground_assets.resources.store import write_table
from synground_assets.roles.base import AdapterInfo, Detection
from synground_assets.roles.phrases import phrase_problem

BOXES_IN_BOUNDS = dg.AssetCheckSpec("boxes_in_image_bounds", asset="boxes",
                                    description="0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for every box.")
YIELD_ABOVE_THRESHOLD = dg.AssetCheckSpec("yield_above_threshold", asset="boxes",
                                          description="Per shard, phrases with a box / phrases >= the recipe's min_yield.")
BOX_COLUMNS = ["box_id", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score", "box_rank"]


def _layout_detections(layout: pd.DataFrame, item: str, phrases: list[str]) -> list[Detection]:
    """GLIGEN: a phrase's box is the layout box it was drawn in (matched case-insensitively)."""
    boxes = {p.lower(): (x0, y0, x1, y1) for p, x0, y0, x1, y1 in
             layout[layout.item_id == item][["phrase", "x0", "y0", "x1", "y1"]].itertuples(index=False)}
    return [Detection(i, boxes[p.lower()], 1.0) for i, p in enumerate(phrases) if p.lower() in boxes]


@generation_asset(
    deps=["images", "phrases"],
    kinds={"parquet"},
    check_specs=[BOXES_IN_BOUNDS, YIELD_ABOVE_THRESHOLD],
)
def boxes(
    context: dg.AssetExecutionContext, store: StoreResource, models: ModelSuiteResource
) -> dg.MaterializeResult:
    """One row per box (phrases without a box have none); the triplets are <image, phrase, box>."""

    def write_shard(recipe, shard, shard_store, folder) -> ShardOutput:
        image_table = shard_store.read_table(recipe.name, "images", shard)
        phrase_table, unusable = _usable_phrases(shard_store.read_table(recipe.name, "phrases", shard).query("kept"))
        image_folder = shard_store.shard_dir(recipe.name, "images", shard)
        per_item = phrase_table.groupby("item_id", sort=False)
        work = [(row, per_item.get_group(row.item_id)) for row in image_table.itertuples(index=False)
                if row.item_id in per_item.groups]
        if recipe.box_source == "gligen":  # no detector to load: the layout the image was drawn in
            generator = recipe.roles["image_generator"]
            info = AdapterInfo("gligen-layout", generator.model or "", generator.revision or "", {"box_source": "gligen"})
            layout = shard_store.read_table(recipe.name, "images", shard, "layout.parquet")
            call = lambda batch: [_layout_detections(layout, row.item_id, list(ph.phrase)) for row, ph in batch]
        else:
            detector = models.suite().detector(recipe.name)
            info = detector.info

            def call(batch):
                pictures = [Image.open(image_folder / row.file).convert("RGB") for row, _ in batch]
                return detector.detect(pictures, [list(ph.phrase) for _, ph in batch])
        progress = Progress(context.log, f"boxes {recipe.name}|{shard}", len(work))
        detections, skipped = run_batched(work, recipe.roles["detector"].batch_size, call,
                                          lambda pair: pair[0].item_id, progress)
        skipped = unusable + skipped
        rows, preview = [], []
        for (row, item_phrases), found in zip(work, detections):
            if found is None:
                continue
            ranked = sorted(found, key=lambda d: (d.phrase_index, -d.score))
            rank: dict[int, int] = {}
            for detection in ranked:
                phrase = item_phrases.iloc[detection.phrase_index]
                rank[detection.phrase_index] = rank.get(detection.phrase_index, -1) + 1
                rows.append((box_id(phrase.phrase_id, rank[detection.phrase_index]), phrase.phrase_id, row.item_id,
                             *map(float, detection.box_xyxy), float(detection.score), rank[detection.phrase_index]))
            if len(preview) < PREVIEW_ITEMS:
                best: dict[int, tuple] = {}
                for detection in ranked:
                    best.setdefault(detection.phrase_index, detection.box_xyxy)
                labelled = [(p, best.get(i)) for i, p in enumerate(item_phrases.phrase)]
                preview.append(draw_triplets(Image.open(image_folder / row.file), labelled))
        detected = pd.DataFrame(rows, columns=BOX_COLUMNS)
        table, removal_rows = curate(recipe, detected, image_table, phrase_table, image_folder, models.suite())
        write_table(folder, table)
        options = recipe.roles["detector"].options
        lineage_rows = table.assign(box_threshold=options.get("box_threshold"), text_threshold=options.get("text_threshold"))
        counts = {"boxes": len(table), "phrases": len(phrase_table), "phrases_with_box": table.phrase_id.nunique()}
        report = quality_report("boxes", "boxes", len(detected), len(table), removal_rows)
        return ShardOutput(lineage={"boxes": lineage_rows, "shard_yields": pd.DataFrame([counts]),
                                    "removals": removal_rows, "shard_quality": report},
                           info=info, skipped=skipped, preview=preview, counts={**counts, "detected_boxes": len(detected)})

    outputs = materialize_shards(context, store, "boxes", write_shard)
    return dg.MaterializeResult(metadata={**_metadata(outputs), **quality_metadata(outputs)},
                                check_results=_checks(context, store, outputs))


def curate(recipe, detected: pd.DataFrame, image_table: pd.DataFrame, phrase_table: pd.DataFrame, image_folder, suite):
    """The recipe's box filters, then its agreement filter when it has one: (kept boxes, removal rows)."""
    settings = QualitySettings.from_dict(recipe.quality)
    kept, removals = filter_boxes(detected, image_table, settings)
    if settings.agreement is not None and len(kept):
        files = dict(zip(image_table.item_id, image_table.file))
        kept, disagreements = agreement_filter(
            kept, dict(zip(phrase_table.phrase_id, phrase_table.phrase)),
            lambda item: Image.open(image_folder / files[item]).convert("RGB"),
            suite.agreement_model(recipe.name, settings.agreement), settings.agreement)
        removals += disagreements
    return kept.reset_index(drop=True), removals_frame(removals)


def _usable_phrases(kept: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """A kept phrase that cannot be grounded (blank, punctuation: a table written by hand or by an
    older version) is not sent to the detector; it becomes a recorded skip, never a silent gap."""
    problems = kept.phrase.map(phrase_problem)
    bad = kept[problems.notna()]
    skipped = [(item, f"phrase {pid} {phrase!r}: {problem}")
               for item, pid, phrase, problem in zip(bad.item_id, bad.phrase_id, bad.phrase, problems[problems.notna()])]
    return kept[problems.isna()], skipped


def _metadata(outputs: list[ShardOutput]) -> dict:
    phrases = sum(o.counts["phrases"] for o in outputs)
    boxed = sum(o.counts["phrases_with_box"] for o in outputs)
    return {
        **summary_metadata(outputs),
        "yield": dg.MetadataValue.float(boxed / phrases if phrases else 0.0),
        "preview": dg.MetadataValue.md(image_markdown(contact_sheet(outputs[0].preview))),
    }


def _checks(context, store: StoreResource, outputs: list[ShardOutput]) -> list[dg.AssetCheckResult]:
    """Checks read back what was published, shard by shard."""
    shard_store = store.store()
    out_of_bounds, yields, failing = 0, {}, []
    for key in context.partition_keys:
        recipe, shard = split_shard_key(key)
        table = shard_store.read_table(recipe, "boxes", shard)
        sizes = shard_store.read_table(recipe, "images", shard)[["item_id", "width", "height"]]
        merged = table.merge(sizes, on="item_id")
        bad = ~((merged.x0 >= 0) & (merged.x0 < merged.x1) & (merged.x1 <= merged.width)
                & (merged.y0 >= 0) & (merged.y0 < merged.y1) & (merged.y1 <= merged.height))
        out_of_bounds += int(bad.sum())
        phrases = int(shard_store.read_table(recipe, "phrases", shard).kept.sum())
        yields[f"{recipe}|{shard}"] = table.phrase_id.nunique() / phrases if phrases else 0.0
        if yields[f"{recipe}|{shard}"] < recipe_book().get(recipe).min_yield:
            failing.append(f"{recipe}|{shard}")
    return [
        dg.AssetCheckResult(check_name="boxes_in_image_bounds", passed=out_of_bounds == 0,
                            metadata={"boxes_out_of_bounds": out_of_bounds}),
        dg.AssetCheckResult(check_name="yield_above_threshold", passed=not failing,
                            metadata={"min_shard_yield": min(yields.values()), "failing_shards": ", ".join(failing)}),
    ]
