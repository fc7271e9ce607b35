"""`finetuned_checkpoint`: the recipe's grounding model fine-tuned on all its triplets (ITC + ITM + AMC).

Reads every published `boxes` shard of the recipe (plus real triplets when the recipe mixes them),
trains with `grounding.train`, and publishes the model folder (`save_pretrained`: safetensors,
processor, resolved training config, the shards and triplet counts used). Training resumes from
its last checkpoint after a crash: the working folder is keyed by everything that defines the run.
Params, loss curves and the held-out pointing game go to MLflow; the shards used go to lineage.
"""

import hashlib
import json
import shutil
from dataclasses import asdict, replace
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from synground_assets import code_version
from synground_assets.assets.quality_report import log_quality_report, recipe_quality_report
from synground_assets.assets.scoring import gradcam_figure
from synground_assets.benchmarks import shapes_test_triplets
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.train import TrainConfig, train
from synground_assets.partitions import recipe_partitions
from synground_assets.previews import image_markdown
from synground_assets.recipes import Recipe, RecipeError, recipe_book
from synground_assets.resources import LineageResource, StoreResource, TrackingResource
from synground_assets.resources.store import ShardStore, write_table
from synground_assets.roles.grounding_blip import load_grounding_model

CHECKPOINT_SHARD = "model"
HELD_OUT_KEYS = ("held_out", "held_out_queries")


class FinetuneConfig(dg.Config):
    """Run-time overrides (launchpad / `--config-json`), e.g. a short smoke run."""

    max_steps: int | None = None


def grounding_spec(recipe: Recipe):
    if recipe.grounding_model is None:
        raise RecipeError(f"recipe {recipe.name!r} has no grounding_model: name the model to fine-tune "
                          "(adapter blip, model: hub id, local folder or tiny:blip-itm-shapes)")
    from synground_assets.roles.hf_common import resolve_model

    location = resolve_model(recipe.grounding_model.model, "grounding_model", recipe.grounding_model.revision)
    return replace(recipe.grounding_model, model=location.path)


def synthetic_triplets(store: ShardStore, recipe: str) -> tuple[list[Triplet], pd.DataFrame]:
    """One triplet per phrase (its best box) from every published boxes shard; and per-shard counts."""
    triplets, counts = [], []
    for shard in store.shards(recipe, "boxes"):
        boxes = store.read_table(recipe, "boxes", shard).query("box_rank == 0")
        phrases = store.read_table(recipe, "phrases", shard)[["phrase_id", "phrase"]]
        images = store.read_table(recipe, "images", shard)[["item_id", "file"]]
        rows = boxes.merge(phrases, on="phrase_id").merge(images, on="item_id")
        folder = store.shard_dir(recipe, "images", shard)
        triplets += [Triplet(str(folder / r.file), r.phrase, [(r.x0, r.y0, r.x1, r.y1)], r.item_id)
                     for r in rows.itertuples(index=False)]
        counts.append((shard, len(rows)))
    return triplets, pd.DataFrame(counts, columns=["shard", "triplets"])


def split_held_out(recipe: Recipe, triplets: list[Triplet]) -> tuple[list[Triplet], list[Triplet], str]:
    """`held_out: shapes_test` evaluates on held-out shapes seeds; a fraction holds out that share of
    items (by a hash of the item id, so the split is stable as shards are added)."""
    held_out = recipe.training.get("held_out", 0.05)
    if held_out == "shapes_test":
        return triplets, shapes_test_triplets(int(recipe.training.get("held_out_queries", 256))), "shapes_test"
    if not isinstance(held_out, (int, float)) or not 0 <= held_out < 1:
        raise RecipeError(f"recipe {recipe.name!r}, training.held_out: expected shapes_test or a fraction in [0, 1), "
                          f"got {held_out!r}")

    def is_held_out(t: Triplet) -> bool:
        return int(hashlib.sha256(str(t.item_id).encode()).hexdigest()[:8], 16) / 16**8 < held_out

    return [t for t in triplets if not is_held_out(t)], [t for t in triplets if is_held_out(t)], f"{held_out:.0%} of items"


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
    settings = {k: v for k, v in recipe.training.items() if k not in HELD_OUT_KEYS}
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
    # 1. Inputs.
    recipe = recipe_book().get(context.partition_key)
    spec = grounding_spec(recipe)
    shard_store = store.store()
    triplets, shard_counts = synthetic_triplets(shard_store, recipe.name)
    if not triplets:
        raise RecipeError(f"recipe {recipe.name!r} has no published boxes shard with triplets; materialize its "
                          f"generation assets first (dagster asset materialize ... --partition '{recipe.name}|00000')")
    train_set, held_out, held_out_source = split_held_out(recipe, triplets)
    real = real_triplets(recipe)
    settings = train_config(recipe, config)
    key = json.dumps([asdict(settings), asdict(spec), shard_counts.values.tolist(), len(real)], sort_keys=True, default=str)
    work = shard_store.shard_dir(recipe.name, "finetuned_checkpoint", f".work-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
    context.log.info(f"{len(train_set)} synthetic + {len(real)} real training triplets, {len(held_out)} held out "
                     f"({held_out_source}); working folder {work}")
    # 2. Train, logging to MLflow as it goes.
    model = load_grounding_model(spec)
    tags = {"dagster_run_id": context.run_id, "recipe": recipe.name, "partition": context.partition_key,
            "code_version": code_version(), "stage": "finetune"}
    with tracking.tracking().run(f"finetune {recipe.name}", tags) as run:
        run.log_params({**{f"train.{k}": v for k, v in asdict(settings).items()}, "base_model": recipe.grounding_model.model,
                        "base_revision": spec.revision or "", "synthetic_triplets": len(train_set), "real_triplets": len(real),
                        "held_out_triplets": len(held_out), "held_out_source": held_out_source, "shards": len(shard_counts)})

        def log(step: int, metrics: dict[str, float]) -> None:
            context.log.info(f"step {step}/{settings.max_steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

        result = train(settings, model, train_set, held_out, work, log_fn=log, real_triplets=real)
        run.log_metric_history(result.history, prefix="train/")
        run.log_metrics({"pointing_game/held_out": result.metrics.get("pointing_game_accuracy", float("nan"))})
        # 3. Publish the model whole, with what made it.
        with shard_store.writing(recipe.name, "finetuned_checkpoint", CHECKPOINT_SHARD) as folder:
            shutil.copytree(result.model_path, folder, dirs_exist_ok=True)
            write_table(folder, shard_counts.assign(recipe=recipe.name))
            (folder / "provenance.json").write_text(json.dumps(
                {"recipe": recipe.name, "base_model": recipe.grounding_model.model, "mlflow_run_id": run.run_id,
                 "dagster_run_id": context.run_id, "code_version": code_version(), "held_out": held_out_source,
                 "metrics": result.metrics}, indent=2))
            run.log_artifact(folder / "train_config.json")
            # What the quality filters removed from the shards this checkpoint trained on.
            log_quality_report(run, recipe_quality_report(lineage.lineage(), recipe.name, list(shard_counts.shard)), folder)
            run.log_artifact(folder / "provenance.json")
        published = shard_store.shard_dir(recipe.name, "finetuned_checkpoint", CHECKPOINT_SHARD)
    # 4. Lineage: which triplets trained this checkpoint.
    checkpoint_id = f"{recipe.name}@{context.run_id}"
    lineage.lineage().replace("checkpoint_shards", shard_counts.assign(
        checkpoint_id=checkpoint_id, recipe=recipe.name, run_id=context.run_id, code_version=code_version(),
        materialized_at=datetime.now(timezone.utc).replace(tzinfo=None)), {"checkpoint_id": checkpoint_id})
    figure = gradcam_figure(model, held_out[:6], settings.eval_resolution)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(published)),
        "steps": settings.max_steps,
        "synthetic_triplets": len(train_set),
        "real_triplets": len(real),
        "shards": len(shard_counts),
        "held_out_pointing_game": dg.MetadataValue.float(result.metrics.get("pointing_game_accuracy", float("nan"))),
        "final_loss": dg.MetadataValue.float(result.metrics.get("final_loss", float("nan"))),
        "checkpoint_id": checkpoint_id,
        "mlflow_run_id": run.run_id,
        "mlflow_run_url": dg.MetadataValue.url(run.url),
        "gradcam_preview": dg.MetadataValue.md(image_markdown(figure)),
    })
