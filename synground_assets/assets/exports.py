"""`exports`: a recipe's triplets in the formats other trainers read (COCO JSON, ODVG jsonl, AMC JSON).

Reads every published `boxes` shard of the recipe with its images, kept phrases and descriptions,
and publishes one folder, `<data root>/<recipe>/exports/all/`, through the store's atomic publish:

- `table.parquet`: the triplet table the writers take (one row per box; a phrase without a box
  has one row with no coordinates, which the writers count and leave out);
- `coco_grounding.json`, `odvg.jsonl`, `amc_grounding.json` (see `datasets/exports.py`);
- `hf/` (Hugging Face `datasets` Parquet with an `Image` feature, images embedded) and `webdataset/`
  (tar shards), each with a dataset card README.md (see `datasets/hub_formats.py`).

Image paths in the exports are relative to the data root (`<recipe>/images/<shard>/images/...`),
so a trainer points its images root at the data root.
"""


import dagster as dg
import pandas as pd

from synground_assets.assets.quality_report import recipe_quality_report
from synground_assets.datasets.exports import (
    TRIPLET_COLUMNS,
    ExportCounts,
    write_amc_grounding,
    write_coco_grounding,
    write_odvg,
)
from synground_assets.datasets.hub_formats import CardFacts, write_hf_parquet, write_webdataset
from synground_assets.partitions import recipe_partitions
from synground_assets.recipes import Recipe, recipe_book
from synground_assets.resources import LineageResource, StoreResource
from synground_assets.resources.store import ShardStore, write_table

EXPORT_SHARD = "all"
FILES = {"coco": "coco_grounding.json", "odvg": "odvg.jsonl", "amc": "amc_grounding.json"}
WRITERS = {"coco": write_coco_grounding, "odvg": write_odvg, "amc": write_amc_grounding}
HUB_FOLDERS = {"hf": "hf", "webdataset": "webdataset"}
HUB_WRITERS = {"hf": write_hf_parquet, "webdataset": write_webdataset}
# Licences the card can state for sure; a hub checkpoint's licence is on its model card, which is not read here.
PROCEDURAL_LICENCE = "procedural, this project's code"
TINY_LICENCE = "random weights built by this project (no trained weights)"


def shard_triplets(store: ShardStore, recipe: str, shard: str) -> pd.DataFrame:
    """One shard as triplet rows: every kept phrase of an item with an image, with its boxes (or none)."""
    images = store.read_table(recipe, "images", shard)[["item_id", "image_path", "width", "height"]]
    descriptions = store.read_table(recipe, "descriptions", shard)[["item_id", "description"]]
    phrases = store.read_table(recipe, "phrases", shard).query("kept")[["phrase_id", "item_id", "phrase"]]
    boxes = store.read_table(recipe, "boxes", shard)[["box_id", "phrase_id", "x0", "y0", "x1", "y1", "score"]]
    rows = (phrases.merge(images, on="item_id").merge(descriptions, on="item_id")
            .merge(boxes, on="phrase_id", how="left"))
    return rows[list(TRIPLET_COLUMNS)]


def recipe_triplets(store: ShardStore, recipe: str, shards: list[str]) -> pd.DataFrame:
    frames = [shard_triplets(store, recipe, shard) for shard in shards]
    return pd.concat(frames, ignore_index=True).sort_values(["item_id", "phrase_id", "box_id"], ignore_index=True)


@dg.asset(
    deps=[dg.AssetDep("boxes", partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="recipe"))],
    partitions_def=recipe_partitions,
    code_version="1",
    group_name="exports",
    kinds={"json", "parquet"},
)
def exports(context: dg.AssetExecutionContext, store: StoreResource, lineage: LineageResource) -> dg.MaterializeResult:
    """Every published boxes shard of the recipe as COCO grounding JSON, ODVG jsonl, AMC JSON, Hugging Face
    `datasets` Parquet and WebDataset tars (the last two with a dataset card)."""
    recipe = context.partition_key
    shard_store = store.store()
    shards = shard_store.shards(recipe, "boxes")
    if not shards:
        raise dg.Failure(f"recipe {recipe!r} has no published boxes shard to export; materialize some first, "
                         f"e.g. --select 'group:generation' --partition '{recipe}|00000'")
    triplets = recipe_triplets(shard_store, recipe, shards)
    context.log.info(f"exports {recipe}: {len(shards)} shard(s), {len(triplets)} triplet rows")
    facts = card_facts(recipe_book().get(recipe), lineage, shard_store, shards)
    with shard_store.writing(recipe, "exports", EXPORT_SHARD, run_id=context.run_id) as folder:
        write_table(folder, triplets)
        counts = {name: WRITERS[name](triplets, folder / file) for name, file in FILES.items()}
        files = {name: HUB_WRITERS[name](triplets, shard_store.root, folder / sub, facts)
                 for name, sub in HUB_FOLDERS.items()}
    final = shard_store.shard_dir(recipe, "exports", EXPORT_SHARD)
    return dg.MaterializeResult(metadata={**_metadata(counts["coco"], shards, final, shard_store),
                                          **{f"{name}_files": dg.MetadataValue.int(n) for name, n in files.items()}})


def card_facts(recipe: Recipe, lineage: LineageResource, store: ShardStore, shards: list[str]) -> CardFacts:
    """The dataset card's recipe, models (with the licences known here) and the shards' quality report."""
    models = [(role, spec.model or f"adapter {spec.adapter}", model_licence(spec.model))
              for role, spec in recipe.roles.items()]
    index = lineage.lineage()
    index.refresh(store.root)
    return CardFacts(recipe.name, recipe.notes, models, recipe_quality_report(index, recipe.name, shards))


def model_licence(model: str | None) -> str:
    """The licence known here of a model the recipe names (a procedural role, a `tiny:` build, else its card)."""
    if model is None:
        return PROCEDURAL_LICENCE
    if model.startswith("tiny:"):
        return TINY_LICENCE
    return f"see the model card of {model}"


def _metadata(counts: ExportCounts, shards: list[str], final, store: ShardStore) -> dict:
    return {
        "images": dg.MetadataValue.int(counts.images),
        "phrases": dg.MetadataValue.int(counts.phrases),
        "boxes": dg.MetadataValue.int(counts.boxes),
        "phrases_without_box": dg.MetadataValue.int(counts.phrases_without_box),
        "shards": dg.MetadataValue.int(len(shards)),
        "shard_keys": ", ".join(shards),
        "images_root": dg.MetadataValue.path(str(store.root)),
        **{f"{name}_path": dg.MetadataValue.path(str(final / file)) for name, file in FILES.items()},
        **{f"{name}_path": dg.MetadataValue.path(str(final / sub)) for name, sub in HUB_FOLDERS.items()},
    }
