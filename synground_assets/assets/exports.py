"""`exports`: a recipe's triplets in the formats other trainers read, published as one immutable release.

Reads every published `boxes` shard of the recipe with its images, kept phrases and descriptions,
each from the shard version its link names when the export starts (`ShardStore.pin`), and publishes
one folder, `<data root>/<recipe>/exports/all/`, through the store's atomic publish (a staging folder
renamed whole: a crash never leaves a half-written export visible):

- `images/<shard>/...`: every image the export refers to, verified and placed inside the export
  (hard links where the file system allows, copies otherwise; `ExportConfig.images`), so re-
  materializing an upstream shard never changes or deletes what a finished export points at;
- `table.parquet`: the triplet table the writers take (one row per box; a phrase without a box
  has one row with no coordinates, which the writers count and leave out);
- `coco_grounding.json`, `odvg.jsonl`, `amc_grounding.json` (see `datasets/exports.py`);
- `hf/` (Hugging Face `datasets` Parquet with an `Image` feature, images embedded) and `webdataset/`
  (tar shards), each with a dataset card README.md (see `datasets/hub_formats.py`);
- `manifest.json`: the shard versions (publish ids) read, per-file sha256, counts, skipped images,
  licence and code version (see `datasets/release.py`).

Image paths in every file are relative to the export folder (`images/<shard>/...`), so a trainer
points its images root at the export folder, and a copy of the folder is a whole release.
An image that does not open, verify or decode is skipped with its item and recorded (manifest,
dataset cards, the materialization's metadata); the export still succeeds.
"""

from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import dagster as dg
import pandas as pd

from synground_assets import code_version
from synground_assets.assets.quality_report import recipe_quality_report
from synground_assets.config.recipes import Recipe, recipe_book
from synground_assets.datasets.exports import (
    TRIPLET_COLUMNS,
    CocoInfo,
    ExportCounts,
    write_amc_grounding,
    write_coco_grounding,
    write_odvg,
)
from synground_assets.datasets.hub_formats import CardFacts, Licence, write_hf_parquet, write_webdataset
from synground_assets.datasets.release import ImageMode, PlacedImages, file_digests, place_images, write_manifest
from synground_assets.partitions import recipe_partitions
from synground_assets.resources import LineageResource, StoreResource
from synground_assets.resources.store import PublishedShard, ShardStore, write_table

EXPORT_SHARD = "all"
CODE_VERSION = "2"
READ_ASSETS = ("images", "descriptions", "phrases", "boxes")
IMAGES_FOLDER = "images"
FILES = {"coco": "coco_grounding.json", "odvg": "odvg.jsonl", "amc": "amc_grounding.json"}
WRITERS = {"odvg": write_odvg, "amc": write_amc_grounding}
HUB_FOLDERS = {"hf": "hf", "webdataset": "webdataset"}
HUB_WRITERS = {"hf": write_hf_parquet, "webdataset": write_webdataset}
# Licences the card can state for sure; a hub checkpoint's licence is on its model card, which is not read here.
PROCEDURAL_LICENCE = "procedural, this project's code"
TINY_LICENCE = "random weights built by this project (no trained weights)"
# The Hub licence ids of the checkpoints the built-in recipes name (each model card's `license:` field).
# A model not listed makes the data's licence "other": its card has to be read by whoever publishes.
KNOWN_LICENCES = {
    "llava-hf/llava-1.5-7b-hf": "llama2",
    "lmsys/vicuna-7b-v1.5": "llama2",
    "stabilityai/stable-diffusion-2-1-base": "openrail++",
    "IDEA-Research/grounding-dino-base": "apache-2.0",
}


class ExportConfig(dg.Config):
    """`images`: how the export holds its images: `auto` (hard links, copies where the file system
    cannot link), `hardlink` (fail where it cannot) or `copy` (independent bytes, e.g. before moving
    the export to another disk). Either way the export never changes when its shards are republished."""

    images: str = "auto"


def pin_shard(store: ShardStore, recipe: str, shard: str) -> dict[str, PublishedShard]:
    """The version of each asset of one shard the export reads, resolved once at its start."""
    return {asset: store.pin(recipe, asset, shard) for asset in READ_ASSETS}


def shard_triplets(store: ShardStore, recipe: str, shard: str,
                   pinned: dict[str, PublishedShard] | None = None) -> pd.DataFrame:
    """One shard as triplet rows: every kept phrase of an item with an image, with its boxes (or none).
    `image_path` is the image's place inside the export (`images/<shard>/...`); `source` its file in
    the pinned images version."""
    pinned = pinned or pin_shard(store, recipe, shard)
    read = {asset: store.read_version(version) for asset, version in pinned.items()}
    images = read["images"][["item_id", "image_path", "width", "height"]]
    descriptions = read["descriptions"][["item_id", "description"]]
    phrases = read["phrases"].query("kept")[["phrase_id", "item_id", "phrase"]]
    boxes = read["boxes"][["box_id", "phrase_id", "x0", "y0", "x1", "y1", "score"]]
    rows = (phrases.merge(images, on="item_id").merge(descriptions, on="item_id")
            .merge(boxes, on="phrase_id", how="left"))
    inside = [image_in_shard(path, recipe, shard) for path in rows["image_path"]]
    rows["source"] = [str(pinned["images"].folder / part) for part in inside]
    rows["image_path"] = [f"{IMAGES_FOLDER}/{shard}/{part}" for part in inside]
    return rows[[*TRIPLET_COLUMNS, "source"]]


def image_in_shard(image_path: str, recipe: str, shard: str) -> str:
    """An images table's path (relative to the data root, `<recipe>/images/<shard>/...`) as a path
    inside its shard folder."""
    parts = PurePosixPath(image_path).parts
    if parts[:3] != (recipe, "images", shard) or len(parts) < 4 or ".." in parts:
        raise ValueError(f"images shard {recipe}|{shard}: image_path {image_path!r} is not under "
                         f"{recipe}/images/{shard}/; rematerialize the images shard")
    return PurePosixPath(*parts[3:]).as_posix()


def recipe_triplets(store: ShardStore, recipe: str, shards: list[str],
                    pinned: dict[str, dict[str, PublishedShard]] | None = None) -> pd.DataFrame:
    pinned = pinned or {shard: pin_shard(store, recipe, shard) for shard in shards}
    frames = [shard_triplets(store, recipe, shard, pinned[shard]) for shard in shards]
    return pd.concat(frames, ignore_index=True).sort_values(["item_id", "phrase_id", "box_id"], ignore_index=True)


def materialize_images(triplets: pd.DataFrame, folder: Path, mode: ImageMode) -> tuple[pd.DataFrame, PlacedImages]:
    """Verify and place every item's image inside `folder`; returns the triplets of the items kept
    (without the `source` column) and what was placed and skipped."""
    items = triplets.drop_duplicates("item_id")
    placed = place_images(
        [(str(row.item_id), Path(row.source), Path(row.image_path), (int(row.width), int(row.height)))
         for row in items.itertuples(index=False)], folder, mode)
    skipped = {s.item_id for s in placed.skipped}
    kept = triplets[~triplets["item_id"].astype(str).isin(skipped)]
    return kept.drop(columns=["source"]).reset_index(drop=True), placed


@dg.asset(
    deps=[dg.AssetDep("boxes", partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="recipe"))],
    partitions_def=recipe_partitions,
    code_version=CODE_VERSION,
    group_name="exports",
    kinds={"json", "parquet"},
)
def exports(context: dg.AssetExecutionContext, config: ExportConfig, store: StoreResource,
            lineage: LineageResource) -> dg.MaterializeResult:
    """Every published boxes shard of the recipe as one immutable release: its images inside it, COCO
    grounding JSON, ODVG jsonl, AMC JSON, Hugging Face `datasets` Parquet and WebDataset tars (the last
    two with a dataset card), and a manifest of the shard versions it was built from."""
    if config.images not in ("auto", "hardlink", "copy"):
        raise dg.Failure(f"exports config images={config.images!r}: expected 'auto', 'hardlink' or 'copy'")
    recipe = context.partition_key
    shard_store = store.store()
    shards = shard_store.shards(recipe, "boxes")
    if not shards:
        raise dg.Failure(f"recipe {recipe!r} has no published boxes shard to export; materialize some first, "
                         f"e.g. --select 'group:generation' --partition '{recipe}|00000'")
    pinned = {shard: pin_shard(shard_store, recipe, shard) for shard in shards}
    triplets = recipe_triplets(shard_store, recipe, shards, pinned)
    context.log.info(f"exports {recipe}: {len(shards)} shard(s), {len(triplets)} triplet rows")
    recipe_spec = recipe_book().get(recipe)
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    licence = data_licence(recipe_spec)
    with shard_store.writing(recipe, "exports", EXPORT_SHARD, run_id=context.run_id) as folder:
        triplets, placed = materialize_images(triplets, folder, config.images)  # type: ignore[arg-type]
        for skipped in placed.skipped:
            context.log.warning(f"exports {recipe}: skipped item {skipped.item_id} ({skipped.image_path}): "
                                f"{skipped.reason}")
        facts = card_facts(recipe_spec, lineage, shard_store, shards, skipped=placed.skipped)
        write_table(folder, triplets)
        info = CocoInfo(f"SynGround visual-grounding triplets, recipe {recipe}", CODE_VERSION, "synground-assets",
                        created_at, licence_name(licence))
        counts = {"coco": write_coco_grounding(triplets, folder / FILES["coco"], info),
                  **{name: WRITERS[name](triplets, folder / FILES[name]) for name in WRITERS}}
        files = {name: HUB_WRITERS[name](triplets, folder, folder / sub, facts) for name, sub in HUB_FOLDERS.items()}
        manifest = release_manifest(recipe, pinned, counts["coco"], placed, licence, created_at, context.run_id)
        write_manifest(folder, {**manifest, "files": file_digests(folder)})
    final = shard_store.shard_dir(recipe, "exports", EXPORT_SHARD)
    return dg.MaterializeResult(metadata={
        **_metadata(counts["coco"], shards, final), **{f"{name}_files": dg.MetadataValue.int(n)
                                                        for name, n in files.items()},
        "images_mode": placed.mode, "skipped_images": dg.MetadataValue.int(len(placed.skipped)),
        "skipped_reasons": dg.MetadataValue.json([vars(s) for s in placed.skipped]),
        "publish_ids": dg.MetadataValue.json(manifest["shards"]),
    })


def release_manifest(recipe: str, pinned: dict[str, dict[str, PublishedShard]], counts: ExportCounts,
                     placed: PlacedImages, licence: Licence, created_at: str, run_id: str) -> dict:
    """Everything `manifest.json` says but the file digests (added once every file is written)."""
    return {
        "recipe": recipe, "created_at": created_at, "run_id": run_id,
        "code_version": {"package": code_version(), "exports_asset": CODE_VERSION},
        "shards": {shard: {asset: {"publish_id": version.publish_id, "version": version.version}
                           for asset, version in assets.items()} for shard, assets in pinned.items()},
        "counts": vars(counts),
        "images": {"folder": IMAGES_FOLDER, "mode": placed.mode, "hardlinked": placed.linked,
                   "copied": placed.copied, "bytes": placed.bytes},
        "skipped_images": [vars(s) for s in placed.skipped],
        "licence": {"ids": licence.ids, "name": licence.name, "details": licence.details},
    }


def card_facts(recipe: Recipe, lineage: LineageResource, store: ShardStore, shards: list[str],
               skipped=()) -> CardFacts:
    """The dataset card's recipe, models (with the licences known here), the data's licence, the
    shards' quality report and the images the export skipped."""
    models = [(role, spec.model or f"adapter {spec.adapter}", model_licence(spec.model))
              for role, spec in recipe.roles.items()]
    index = lineage.lineage()
    index.refresh(store.root)
    return CardFacts(recipe.name, recipe.notes, models, recipe_quality_report(index, recipe.name, shards),
                     data_licence(recipe), tuple(skipped))


def model_licence(model: str | None) -> str:
    """The licence known here of a model the recipe names (a procedural role, a `tiny:` build, else its card)."""
    if model is None:
        return PROCEDURAL_LICENCE
    if model.startswith("tiny:"):
        return TINY_LICENCE
    if model in KNOWN_LICENCES:
        return f"{KNOWN_LICENCES[model]} (model card of {model})"
    return f"see the model card of {model}"


def data_licence(recipe: Recipe) -> Licence:
    """The combined licence of the models that made the data (the recipe's generation roles; the
    grounding model trained on it makes none): every Hub id they carry, all of which bind the data.
    Procedural roles and `tiny:` random-weight models carry no third-party licence; a model whose
    licence is not known here makes it "other" with its card to read."""
    specs = [spec for role, spec in recipe.roles.items() if role != "detector"]
    specs += [spec for _, spec in recipe.detectors()]  # every detector of an ensemble boxes the data
    models = [spec.model for spec in specs]
    # A role may run a second model named in its options (GLIGEN's layout LLM: `layout_phrase_model`).
    models += [value for spec in specs for value in (spec.options or {}).values()
               if isinstance(value, str) and value in KNOWN_LICENCES]
    known = sorted({KNOWN_LICENCES[m] for m in models if m in KNOWN_LICENCES})
    unknown = sorted({m for m in models if m and not m.startswith("tiny:") and m not in KNOWN_LICENCES})
    if unknown:
        return Licence(known + ["other"], "see-model-cards",
                       f"the terms of every model that made the data bind it: {', '.join(known) or 'none known'}, "
                       f"and those on the model cards of {', '.join(unknown)}.")
    if known:
        return Licence(known, "", f"the terms of every model that made the data bind it: {', '.join(known)}.")
    return Licence(["other"], "synground-procedural",
                   "made by this project's procedural code and random-weight tiny models only: no model licence "
                   "applies; the data is a test fixture, not a trained model's output.")


def licence_name(licence: Licence) -> str:
    return " AND ".join(i for i in licence.ids if i != "other") or licence.name


def _metadata(counts: ExportCounts, shards: list[str], final) -> dict:
    return {
        "images": dg.MetadataValue.int(counts.images),
        "phrases": dg.MetadataValue.int(counts.phrases),
        "boxes": dg.MetadataValue.int(counts.boxes),
        "phrases_without_box": dg.MetadataValue.int(counts.phrases_without_box),
        "shards": dg.MetadataValue.int(len(shards)),
        "shard_keys": ", ".join(shards),
        "images_root": dg.MetadataValue.path(str(final)),
        "manifest_path": dg.MetadataValue.path(str(final / "manifest.json")),
        **{f"{name}_path": dg.MetadataValue.path(str(final / file)) for name, file in FILES.items()},
        **{f"{name}_path": dg.MetadataValue.path(str(final / sub)) for name, sub in HUB_FOLDERS.items()},
    }
