"""`benchmark_scores`: pointing-game accuracy of a recipe's fine-tuned model on one benchmark.

In one run it scores the base model, the fine-tuned checkpoint of the recipe, and the centre-point
and uniform-random baselines on the same queries (`pipeline/scoring.py`), logs one MLflow run
(params, the four metrics and the gain, a per-query CSV and a figure of GradCAM overlays) and
records the scores in lineage. A benchmark whose files are absent is reported as absent, never as
a zero score.
"""

import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from synground_assets.assets.provenance import Provenance
from synground_assets.config.recipes import recipe_book
from synground_assets.grounding.visualize import gradcam_figure
from synground_assets.partitions import recipe_partitions
from synground_assets.pipeline.scoring import finetuned_folder, load_finetuned, per_query_table, score_benchmark
from synground_assets.pipeline.training import grounding_spec
from synground_assets.records.evaluation_sets import BENCHMARKS, BenchmarkMissing, load_benchmark
from synground_assets.records.previews import image_markdown
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource, TrackingResource

benchmark_partitions = dg.MultiPartitionsDefinition(
    {"benchmark": dg.StaticPartitionsDefinition(list(BENCHMARKS)), "recipe": recipe_partitions}
)


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
    context: dg.AssetExecutionContext, store: StoreResource, lineage: LineageResource, tracking: TrackingResource,
    suite: ModelSuiteResource,
) -> dg.MaterializeResult:
    """Pointing game: base model, fine-tuned checkpoint, centre and random baselines, same queries."""
    keys = context.partition_key.keys_by_dimension
    benchmark_name, recipe = keys["benchmark"], recipe_book().get(keys["recipe"])
    # 1. The queries, or a clear report that the benchmark is absent.
    try:
        benchmark = load_benchmark(benchmark_name, recipe_book().benchmarks)
    except BenchmarkMissing as missing:
        context.log.warning(str(missing))
        return dg.MaterializeResult(metadata={"status": "absent", "reason": str(missing)})
    checkpoint = finetuned_folder(store.store(), recipe)
    # 2. Score everything on the same queries.
    base_spec = grounding_spec(recipe)
    base = suite.suite().grounding_model(recipe.name)  # the recipe's base, as the suite caches it
    finetuned = load_finetuned(store.store(), recipe, base_spec.device, suite.suite())
    scores = score_benchmark(base, finetuned, benchmark)
    results, metrics, protocol = scores.results, scores.metrics, benchmark.protocol
    figure = gradcam_figure(finetuned, benchmark.triplets, benchmark.resolution, protocol)
    # 3. MLflow: params, metrics, per-query CSV, overlays.
    provenance = Provenance.of(context)
    tags = provenance.tags(recipe=recipe.name, benchmark=benchmark_name, partition=str(context.partition_key),
                           stage="benchmark")
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
    context.log.info(f"{benchmark_name}: pointing game on {scores.queries} queries: base model "
                     f"{metrics['pointing_game/base']:.3f}, fine-tuned {metrics['pointing_game/finetuned']:.3f}, "
                     f"centre baseline {metrics['pointing_game/center']:.3f}; MLflow run {run.run_id}")
    # 4. Lineage.
    row = pd.DataFrame([{"benchmark": benchmark_name, "recipe": recipe.name, "queries": scores.queries,
                         **{name.split("/")[1]: value for name, value in metrics.items()},
                         "mlflow_run_id": run.run_id, **provenance.columns()}])
    lineage.lineage().replace("benchmark_scores", row, {"benchmark": benchmark_name, "recipe": recipe.name})
    return dg.MaterializeResult(metadata={
        "status": "scored",
        "queries": scores.queries,
        "protocol": protocol.name,
        **{name: dg.MetadataValue.float(value) for name, value in metrics.items()},
        "skipped_queries": dg.MetadataValue.json(benchmark.skipped),
        "mlflow_run_id": run.run_id,
        "mlflow_run_url": dg.MetadataValue.url(run.url),
        "gradcam_preview": dg.MetadataValue.md(image_markdown(figure)),
    })
