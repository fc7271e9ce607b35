"""The fine-tuning stage without Dagster: which triplets train a recipe's model, which are held out,
how many ranks train it, and the working folder its torchrun job reads (`prepare_training`).

The `finetuned_checkpoint` asset calls `prepare_training`, launches the job through Pipes and
publishes; everything it decides is decided here, testable without a Dagster instance.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from synground_assets.config.recipes import Recipe, RecipeError, RoleSpec
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.loader import write_index, write_triplets_index
from synground_assets.records.evaluation_sets import shapes_test_triplets
from synground_assets.resources.store import ShardStore, write_table

CHECKPOINT_SHARD = "model"
ROW_COLUMNS = ["image", "phrase", "x0", "y0", "x1", "y1", "item_id"]
PREVIEW_TRIPLETS = 6  # held-out triplets kept in memory for the GradCAM figure


@dataclass
class TrainingInputs:
    """What `prepare_training` decided and wrote into the working folder `work`."""

    settings: TrainConfig
    spec: RoleSpec  # the grounding model, resolved to a local path
    work: Path
    index: list[str]  # Parquet index files of the training triplets
    held_out_index: str
    held_out_source: str  # "shapes_test" or "5% of items"
    held_out_preview: list[Triplet]
    synthetic_triplets: int
    real_triplets: int
    shard_counts: pd.DataFrame  # shard, triplets
    ranks: int


def grounding_spec(recipe: Recipe) -> RoleSpec:
    """The recipe's grounding model with its location resolved (hub snapshot, folder or tiny: build)."""
    if recipe.grounding_model is None:
        raise RecipeError(f"recipe {recipe.name!r} has no grounding_model: name the model to fine-tune "
                          "(adapter blip or albef, model: hub id, local folder or tiny:blip-itm-shapes / "
                          "tiny:albef-shapes)")
    from synground_assets.adapters.grounding import resolved_spec

    return resolved_spec(recipe.grounding_model)


def synthetic_rows(store: ShardStore, recipe: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per phrase (its best box) from every published boxes shard: image path, phrase,
    box, item id; and the per-shard counts. Columns all along, never one object per triplet."""
    frames, counts = [], []
    for shard in store.shards(recipe, "boxes"):
        boxes = store.read_table(recipe, "boxes", shard).query("box_rank == 0")
        phrases = store.read_table(recipe, "phrases", shard)[["phrase_id", "phrase"]]
        images = store.read_table(recipe, "images", shard)[["item_id", "file"]]
        rows = boxes.merge(phrases, on="phrase_id").merge(images, on="item_id")
        rows["image"] = str(store.shard_dir(recipe, "images", shard)) + os.sep + rows["file"]
        frames.append(rows[ROW_COLUMNS])
        counts.append((shard, len(rows)))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROW_COLUMNS)
    return rows, pd.DataFrame(counts, columns=["shard", "triplets"])


def split_held_out(recipe: Recipe, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | list[Triplet], str]:
    """`held_out: shapes_test` evaluates on held-out shapes seeds; a fraction holds out that share of
    items (by a hash of the item id, so the split is stable as shards are added)."""
    held_out = recipe.training.held_out  # validated when the recipe file loaded
    if held_out == "shapes_test":
        return rows, shapes_test_triplets(recipe.training.held_out_queries), "shapes_test"
    share = rows["item_id"].astype(str).map(lambda i: int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 16**8)
    return rows[share >= held_out], rows[share < held_out], f"{held_out:.0%} of items"


def write_rows_index(rows: pd.DataFrame, path: Path, source: str) -> str:
    boxes = rows[["x0", "y0", "x1", "y1"]].to_numpy(np.float32)
    return str(write_index(path, rows["image"].tolist(), rows["phrase"].tolist(), boxes, source))


def real_triplets(recipe: Recipe) -> list[Triplet]:
    """Visual Genome regions when the recipe mixes real data (`real_data: {source: visual_genome, ...}`)."""
    real = recipe.real_data  # validated when the recipe file loaded: visual_genome is the one source
    if real is None:
        return []
    from synground_assets.datasets.visual_genome import read_visual_genome

    result = read_visual_genome(real.regions, real.images, real.image_data, real.max_images)
    return [Triplet(q.image_path, q.phrase, list(q.boxes_xyxy), q.query_id) for q in result.queries]


def train_config(recipe: Recipe, max_steps: int | None = None, batch_size: int | None = None) -> TrainConfig:
    """The recipe's TrainConfig (the real-data share included), with run-time `max_steps` and
    `batch_size` overrides (a short run, e.g. `make demo`'s)."""
    overrides = {name: value for name, value in (("max_steps", max_steps), ("batch_size", batch_size)) if value}
    return replace(recipe.training.config, **overrides)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ranks_per_node(recipe: Recipe, device: str, gpus: Callable[[], int] = visible_gpus) -> int:
    """`training.nproc_per_node`: a number, or `auto` (default): every visible GPU, 1 on the CPU."""
    value = recipe.training.nproc_per_node  # validated when the recipe file loaded
    if value == "auto":
        return max(1, gpus()) if device != "cpu" else 1
    return value


def prepare_training(store: ShardStore, recipe: Recipe, max_steps: int | None = None,
                     batch_size: int | None = None, gpus: Callable[[], int] = visible_gpus) -> TrainingInputs:
    """Split the recipe's published triplets, index them (with the real ones) into a working folder
    keyed by everything that defines the run (so a rerun of the same run resumes there)."""
    spec = grounding_spec(recipe)
    rows, shard_counts = synthetic_rows(store, recipe.name)
    if rows.empty:
        raise RecipeError(f"recipe {recipe.name!r} has no published boxes shard with triplets; materialize its "
                          f"generation assets first (dagster asset materialize ... --partition '{recipe.name}|00000')")
    train_rows, held_out, held_out_source = split_held_out(recipe, rows)
    real = real_triplets(recipe)
    settings = train_config(recipe, max_steps, batch_size)
    key = json.dumps([asdict(settings), asdict(spec), shard_counts.values.tolist(), len(real)], sort_keys=True,
                     default=str)
    work = store.shard_dir(recipe.name, "finetuned_checkpoint",
                           f".work-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
    (work / "index").mkdir(parents=True, exist_ok=True)
    index = [write_rows_index(train_rows, work / "index" / "synthetic.parquet", "synthetic")]
    if real:
        index.append(str(write_triplets_index(real, work / "index", "real")))
    if isinstance(held_out, pd.DataFrame):
        held_out_index = write_rows_index(held_out, work / "index" / "held_out.parquet", "synthetic")
        preview = [Triplet(r.image, r.phrase, [(r.x0, r.y0, r.x1, r.y1)], r.item_id)
                   for r in held_out.head(PREVIEW_TRIPLETS).itertuples()]
    else:
        held_out_index = str(write_triplets_index(held_out, work / "index" / "held_out", "synthetic"))
        preview = held_out[:PREVIEW_TRIPLETS]
    write_table(work, shard_counts.assign(recipe=recipe.name))
    return TrainingInputs(settings, spec, work, index, held_out_index, held_out_source, preview, len(train_rows),
                          len(real), shard_counts, ranks_per_node(recipe, spec.device, gpus))
