"""`benchmark_scores`: pointing-game accuracy of a recipe's fine-tuned model on one benchmark.

In one run it scores the base model, the fine-tuned checkpoint of the recipe, and the centre-point
and uniform-random baselines on the same queries, logs one MLflow run (params, the four metrics and
the gain, a per-query CSV and a figure of GradCAM overlays) and records the scores in lineage.
A benchmark whose files are absent is reported as absent, never as a zero score.
"""

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import dagster as dg
import pandas as pd
from PIL import Image, ImageDraw

from synground_assets import code_version
from synground_assets.benchmarks import BENCHMARKS, BenchmarkMissing, load_benchmark
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.gradcam import cross_attention_gradcam, upsample_cam
from synground_assets.grounding.pointing_game import (
    PointingProtocol,
    as_protocol,
    centre_point_baseline,
    evaluate_pointing_game,
    heatmap_point,
    point_in_any_box,
    queries_of,
    random_point_baseline,
)
from synground_assets.partitions import recipe_partitions
from synground_assets.previews import contact_sheet, image_markdown
from synground_assets.recipes import RecipeError, recipe_book
from synground_assets.resources import LineageResource, StoreResource, TrackingResource

benchmark_partitions = dg.MultiPartitionsDefinition(
    {"benchmark": dg.StaticPartitionsDefinition(list(BENCHMARKS)), "recipe": recipe_partitions}
)
OVERLAYS = 8


def gradcam_overlay(model, triplet: Triplet, resolution: int | None, protocol: PointingProtocol,
                    tile: int = 192) -> Image.Image:
    """The image with the model's GradCAM heat laid over it, the true box(es) in green and the
    pointing-game point as a cross (white when it hits, red when it misses), point and hit by the
    score's own protocol."""
    image = triplet.load_image()
    inputs = model.preprocess([image], [triplet.phrase], resolution)
    cam = cross_attention_gradcam(model, inputs, combine=protocol.combine).cam[0].float().cpu()  # (rows, cols)
    heat = upsample_cam(cam[None], (image.height, image.width), protocol.upsample)[0]  # (H, W)
    heat = (heat / heat.max().clamp(min=1e-12)).clamp(0, 1)  # the amc map is not normalised
    red = Image.fromarray((heat.numpy() * 255).astype("uint8")).convert("L")
    overlay = Image.composite(Image.new("RGB", image.size, (255, 0, 0)), image, red.point(lambda v: int(v * 0.6)))
    x, y = heatmap_point(cam, image.size, protocol.upsample)
    hit = point_in_any_box((x, y), triplet.boxes_xyxy, protocol.hit)
    scale = tile / image.width
    canvas = Image.new("RGB", (tile, round(image.height * scale) + 18), "white")
    canvas.paste(overlay.resize((tile, round(image.height * scale))))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in triplet.boxes_xyxy:
        draw.rectangle((x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1), outline=(0, 200, 0), width=2)
    px, py = x * scale, y * scale
    colour = (255, 255, 255) if hit else (255, 0, 0)
    draw.line((px - 6, py, px + 6, py), fill=colour, width=2)
    draw.line((px, py - 6, px, py + 6), fill=colour, width=2)
    draw.text((3, canvas.height - 16), triplet.phrase[:34], fill=(0, 0, 0))
    return canvas


def gradcam_figure(model, triplets: Sequence[Triplet], resolution: int | None,
                   protocol: str | PointingProtocol = "pixel-centre") -> Image.Image:
    """Overlays of the first few triplets, four to a row (the model is put in eval mode meanwhile)."""
    was_training = model.training
    model.eval()
    try:
        overlays = [gradcam_overlay(model, t, resolution, as_protocol(protocol)) for t in triplets[:OVERLAYS]]
        return contact_sheet(overlays, columns=4)
    finally:
        model.train(was_training)


def per_query_table(triplets: Sequence[Triplet], results: dict) -> pd.DataFrame:
    rows = {"item_id": [t.item_id for t in triplets], "phrase": [t.phrase for t in triplets],
            "boxes_xyxy": [str(t.boxes_xyxy) for t in triplets]}
    for name, result in results.items():
        rows[f"{name}_point_xy"] = [str(r.point_xy) for r in result.results]
        rows[f"{name}_hit"] = [r.hit for r in result.results]
    return pd.DataFrame(rows)


@dg.asset(
    deps=[dg.AssetDep("finetuned_checkpoint",
                      partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="recipe"))],
    partitions_def=benchmark_partitions,
    code_version="1",
    group_name="learning",
    pool="gpu",
    kinds={"mlflow"},
)
def benchmark_scores(
    context: dg.AssetExecutionContext, store: StoreResource, lineage: LineageResource, tracking: TrackingResource
) -> dg.MaterializeResult:
    """Pointing game: base model, fine-tuned checkpoint, centre and random baselines, same queries."""
    # Imported here: training.py imports this module's figure helper.
    from synground_assets.assets.training import CHECKPOINT_SHARD, grounding_spec
    from synground_assets.roles.grounding import load_grounding_model

    keys = context.partition_key.keys_by_dimension
    benchmark_name, recipe = keys["benchmark"], recipe_book().get(keys["recipe"])
    # 1. The queries, or a clear report that the benchmark is absent.
    try:
        benchmark = load_benchmark(benchmark_name, recipe_book().benchmarks)
    except BenchmarkMissing as missing:
        context.log.warning(str(missing))
        return dg.MaterializeResult(metadata={"status": "absent", "reason": str(missing)})
    checkpoint = store.store().shard_dir(recipe.name, "finetuned_checkpoint", CHECKPOINT_SHARD)
    if not (checkpoint / "config.json").is_file():
        raise RecipeError(f"recipe {recipe.name!r} has no fine-tuned checkpoint at {checkpoint}; materialize "
                          f"finetuned_checkpoint for partition {recipe.name!r} first")
    # 2. Score everything on the same queries.
    base_spec = grounding_spec(recipe)
    base = load_grounding_model(base_spec)
    finetuned = load_grounding_model(str(checkpoint), device=base_spec.device)
    queries = queries_of(benchmark.triplets)
    protocol = benchmark.protocol
    results = {
        "base": evaluate_pointing_game(base, benchmark.triplets, benchmark.resolution, protocol=protocol),
        "finetuned": evaluate_pointing_game(finetuned, benchmark.triplets, benchmark.resolution, protocol=protocol),
        "center": centre_point_baseline(queries, protocol=protocol),
        "random": random_point_baseline(queries, protocol=protocol),
    }
    metrics = {f"pointing_game/{name}": result.accuracy for name, result in results.items()}
    metrics["pointing_game/gain"] = results["finetuned"].accuracy - results["base"].accuracy
    figure = gradcam_figure(finetuned, benchmark.triplets, benchmark.resolution, protocol)
    # 3. MLflow: params, metrics, per-query CSV, overlays.
    tags = {"dagster_run_id": context.run_id, "recipe": recipe.name, "benchmark": benchmark_name,
            "partition": str(context.partition_key), "code_version": code_version(), "stage": "benchmark"}
    with tracking.tracking().run(f"{recipe.name} on {benchmark_name}", tags) as run:
        run.log_params({"recipe": recipe.name, "benchmark": benchmark_name, "base_model": recipe.grounding_model.model,
                        "checkpoint": str(checkpoint), "queries": len(benchmark.triplets), "source": benchmark.source,
                        "resolution": benchmark.resolution or "model default",
                        "protocol": protocol.name, "skipped_queries": sum(benchmark.skipped.values())})
        run.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as folder:
            per_query_table(benchmark.triplets, results).to_csv(Path(folder) / "per_query.csv", index=False)
            figure.save(Path(folder) / "gradcam_overlays.png")
            run.log_artifact(Path(folder) / "per_query.csv")
            run.log_artifact(Path(folder) / "gradcam_overlays.png")
    # 4. Lineage.
    scores = pd.DataFrame([{"benchmark": benchmark_name, "recipe": recipe.name, "queries": len(queries),
                            **{name.split("/")[1]: value for name, value in metrics.items()},
                            "mlflow_run_id": run.run_id, "run_id": context.run_id, "code_version": code_version(),
                            "materialized_at": datetime.now(timezone.utc).replace(tzinfo=None)}])
    lineage.lineage().replace("benchmark_scores", scores, {"benchmark": benchmark_name, "recipe": recipe.name})
    return dg.MaterializeResult(metadata={
        "status": "scored",
        "queries": len(queries),
        "protocol": protocol.name,
        **{name: dg.MetadataValue.float(value) for name, value in metrics.items()},
        "skipped_queries": dg.MetadataValue.json(benchmark.skipped),
        "mlflow_run_id": run.run_id,
        "mlflow_run_url": dg.MetadataValue.url(run.url),
        "gradcam_preview": dg.MetadataValue.md(image_markdown(figure)),
    })
