"""`finetuned_checkpoint`: the recipe's grounding model fine-tuned on all its triplets (ITC + ITM + AMC).

Indexes every published `boxes` shard of the recipe (plus real triplets when the recipe mixes
them) into Parquet files, then starts the training as a torchrun job (`python -m
synground_assets.finetune`, `nproc_per_node` ranks; see that module) through Dagster Pipes. Rank 0
logs to MLflow, publishes the model folder (`save_pretrained`: safetensors, processor, resolved
training config, the shards and triplet counts used) and reports its metadata back here. Training
resumes from its last checkpoint after a crash (of any rank): the working folder is keyed by
everything that defines the run. The shards used go to lineage.
"""

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from synground_assets.dagster_internals import DagsterPipesExecutionError

from synground_assets import code_version
from synground_assets.assets.quality_report import log_quality_report, recipe_quality_report
from synground_assets.assets.scoring import gradcam_figure
from synground_assets.benchmarks import shapes_test_triplets
from synground_assets.finetune import job_spec
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.loader import write_index, write_triplets_index
from synground_assets.grounding.config import TrainConfig
from synground_assets.partitions import recipe_partitions
from synground_assets.previews import image_markdown
from synground_assets.recipes import Recipe, RecipeError, recipe_book
from synground_assets.resources import LineageResource, StoreResource, TrackingResource
from synground_assets.resources.store import ShardStore, write_table
from synground_assets.roles.grounding import load_grounding_model

CHECKPOINT_SHARD = "model"
ASSET_KEYS = ("held_out", "held_out_queries", "nproc_per_node")  # training settings read here, not by TrainConfig


class FinetuneConfig(dg.Config):
    """Run-time overrides (launchpad / `--config-json`), e.g. a short smoke run."""

    max_steps: int | None = None


def grounding_spec(recipe: Recipe):
    if recipe.grounding_model is None:
        raise RecipeError(f"recipe {recipe.name!r} has no grounding_model: name the model to fine-tune "
                          "(adapter blip or albef, model: hub id, local folder or tiny:blip-itm-shapes / tiny:albef-shapes)")
    from synground_assets.roles.hf_common import resolve_model

    location = resolve_model(recipe.grounding_model.model, "grounding_model", recipe.grounding_model.revision)
    return replace(recipe.grounding_model, model=location.path)


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
        frames.append(rows[["image", "phrase", "x0", "y0", "x1", "y1", "item_id"]])
        counts.append((shard, len(rows)))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image", "phrase", "x0", "y0", "x1", "y1", "item_id"])
    return rows, pd.DataFrame(counts, columns=["shard", "triplets"])


def split_held_out(recipe: Recipe, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | list[Triplet], str]:
    """`held_out: shapes_test` evaluates on held-out shapes seeds; a fraction holds out that share of
    items (by a hash of the item id, so the split is stable as shards are added)."""
    held_out = recipe.training.get("held_out", 0.05)
    if held_out == "shapes_test":
        return rows, shapes_test_triplets(int(recipe.training.get("held_out_queries", 256))), "shapes_test"
    if not isinstance(held_out, (int, float)) or not 0 <= held_out < 1:
        raise RecipeError(f"recipe {recipe.name!r}, training.held_out: expected shapes_test or a fraction in [0, 1), "
                          f"got {held_out!r}")
    share = rows["item_id"].astype(str).map(lambda i: int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 16**8)
    return rows[share >= held_out], rows[share < held_out], f"{held_out:.0%} of items"


def write_rows_index(rows: pd.DataFrame, path: Path, source: str) -> str:
    boxes = rows[["x0", "y0", "x1", "y1"]].to_numpy(np.float32)
    return str(write_index(path, rows["image"].tolist(), rows["phrase"].tolist(), boxes, source))


def real_triplets(recipe: Recipe) -> list[Triplet]:
    """Visual Genome regions when the recipe mixes real data (`real_data: {source: visual_genome, ...}`)."""
    real = recipe.real_data
    if not real:
        return []
    if real.get("source") != "visual_genome":
        raise RecipeError(f"recipe {recipe.name!r}, real_data.source: expected visual_genome, got {real.get('source')!r}")
    from synground_assets.datasets.visual_genome import read_visual_genome

    result = read_visual_genome(real["regions"], real["images"], real.get("image_data"), real.get("max_images"))
    return [Triplet(q.image_path, q.phrase, list(q.boxes_xyxy), q.query_id) for q in result.queries]


def train_config(recipe: Recipe, overrides: FinetuneConfig) -> TrainConfig:
    settings = {k: v for k, v in recipe.training.items() if k not in ASSET_KEYS}
    if recipe.real_data:
        settings["real_data_ratio"] = recipe.real_data.get("ratio", 0.5)
    if overrides.max_steps:
        settings["max_steps"] = overrides.max_steps
    try:
        return TrainConfig.from_dict(settings)
    except ValueError as exc:
        raise RecipeError(f"recipe {recipe.name!r}, field 'training': {exc}") from exc


@dg.asset(
    deps=[dg.AssetDep("boxes", partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="recipe"))],
    partitions_def=recipe_partitions,
    code_version="1",
    group_name="learning",
    pool="gpu",
    kinds={"pytorch", "mlflow"},
)
def finetuned_checkpoint(
    context: dg.AssetExecutionContext, config: FinetuneConfig, store: StoreResource, lineage: LineageResource,
    tracking: TrackingResource,
) -> dg.MaterializeResult:
    """The recipe's grounding model fine-tuned on every published triplet of the recipe."""
    # 1. Inputs, indexed into Parquet files in the working folder.
    recipe = recipe_book().get(context.partition_key)
    spec = grounding_spec(recipe)
    shard_store = store.store()
    rows, shard_counts = synthetic_rows(shard_store, recipe.name)
    if rows.empty:
        raise RecipeError(f"recipe {recipe.name!r} has no published boxes shard with triplets; materialize its "
                          f"generation assets first (dagster asset materialize ... --partition '{recipe.name}|00000')")
    train_rows, held_out, held_out_source = split_held_out(recipe, rows)
    real = real_triplets(recipe)
    settings = train_config(recipe, config)
    ranks = ranks_per_node(recipe, spec.device)
    key = json.dumps([asdict(settings), asdict(spec), shard_counts.values.tolist(), len(real)], sort_keys=True, default=str)
    work = shard_store.shard_dir(recipe.name, "finetuned_checkpoint", f".work-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
    (work / "index").mkdir(parents=True, exist_ok=True)
    index = [write_rows_index(train_rows, work / "index" / "synthetic.parquet", "synthetic")]
    if real:
        index.append(str(write_triplets_index(real, work / "index", "real")))
    if isinstance(held_out, pd.DataFrame):
        held_out_index = write_rows_index(held_out, work / "index" / "held_out.parquet", "synthetic")
        held_out = [Triplet(r.image, r.phrase, [(r.x0, r.y0, r.x1, r.y1)], r.item_id) for r in held_out.head(6).itertuples()]
    else:
        held_out_index = str(write_triplets_index(held_out, work / "index" / "held_out", "synthetic"))
    write_table(work, shard_counts.assign(recipe=recipe.name))
    context.log.info(f"{len(train_rows)} synthetic + {len(real)} real training triplets, {held_out_source} held out; "
                     f"{ranks} rank(s) per node; working folder {work}")
    # 2. Train as a torchrun job through Pipes; rank 0 logs to MLflow, publishes and reports back.
    tags = {"dagster_run_id": context.run_id, "recipe": recipe.name, "partition": context.partition_key,
            "code_version": code_version(), "stage": "finetune"}
    with tracking.tracking().run(f"finetune {recipe.name}", tags) as run:
        run.log_params({**{f"train.{k}": v for k, v in asdict(settings).items()}, "base_model": recipe.grounding_model.model,
                        "base_revision": spec.revision or "", "synthetic_triplets": len(train_rows), "real_triplets": len(real),
                        "held_out_source": held_out_source, "shards": len(shard_counts), "nproc_per_node": ranks})
        publish = {"root": str(shard_store.root), "recipe": recipe.name, "asset": "finetuned_checkpoint",
                   "shard": CHECKPOINT_SHARD, "tables": {"table.parquet": str(work / "table.parquet")},
                   "provenance": {"recipe": recipe.name, "base_model": recipe.grounding_model.model,
                                  "dagster_run_id": context.run_id, "code_version": code_version(), "held_out": held_out_source}}
        job = job_spec(settings, spec, index, held_out_index, str(work),
                       {"tracking_uri": run.tracking_uri, "run_id": run.run_id}, publish)
        (work / "job.json").write_text(json.dumps(job, indent=2))
        reported = run_training_job(context, work, ranks)
        lineage_index = lineage.lineage()
        lineage_index.refresh(shard_store.root)
        # What the quality filters removed from the shards this checkpoint trained on.
        log_quality_report(run, recipe_quality_report(lineage_index, recipe.name, list(shard_counts.shard)), work)
    # 3. Lineage: which triplets trained this checkpoint.
    checkpoint_id = f"{recipe.name}@{context.run_id}"
    lineage_index.replace("checkpoint_shards", shard_counts.assign(
        checkpoint_id=checkpoint_id, recipe=recipe.name, run_id=context.run_id, code_version=code_version(),
        materialized_at=datetime.now(timezone.utc).replace(tzinfo=None)), {"checkpoint_id": checkpoint_id})
    published = shard_store.shard_dir(recipe.name, "finetuned_checkpoint", CHECKPOINT_SHARD)
    figure = gradcam_figure(load_grounding_model(published, device="cpu"), held_out[:6], settings.eval_resolution, settings.eval_protocol)
    return dg.MaterializeResult(metadata={
        **reported,
        "synthetic_triplets": len(train_rows),
        "real_triplets": len(real),
        "shards": len(shard_counts),
        "checkpoint_id": checkpoint_id,
        "gradcam_preview": dg.MetadataValue.md(image_markdown(figure)),
    })


def ranks_per_node(recipe: Recipe, device: str) -> int:
    """`training.nproc_per_node`: a number, or `auto` (default): every visible GPU, 1 on the CPU."""
    value = recipe.training.get("nproc_per_node", "auto")
    if value == "auto":
        import torch

        return torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RecipeError(f"recipe {recipe.name!r}, training.nproc_per_node: expected auto or a positive integer, got {value!r}")
    return value


def run_training_job(context: dg.AssetExecutionContext, work: Path, ranks: int) -> dict:
    """torchrun the job on this node through Pipes; rank 0's reported metadata. A failed rank
    (crash, kill -9, a peer's collective timeout) fails the whole job; the error says how to resume."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "synground_assets.finetune", str(work / "job.json")]
    context.log.info("launching " + " ".join(command))
    try:
        invocation = dg.PipesSubprocessClient().run(context=context, command=command)
    except DagsterPipesExecutionError as exc:
        steps = [int(m.group(1)) for p in (work / "checkpoints").glob("step-*.pt") if (m := re.fullmatch(r"step-(\d+)\.pt", p.name))]
        resume = f"the last checkpoint is step {max(steps)}" if steps else "no checkpoint was written yet"
        raise dg.Failure(
            description=f"the training job failed ({exc}); torchrun's summary in the step's output names the failed "
                        f"rank and its exit code or signal. {resume} in {work / 'checkpoints'}: rematerialize to resume from it.",
            metadata={"last_checkpoint_step": max(steps, default=0), "working_folder": dg.MetadataValue.path(str(work))},
        ) from exc
    return dict(invocation.get_materialize_result().metadata)
