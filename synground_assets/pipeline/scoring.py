"""The benchmark stage without Dagster: the pointing game of a recipe's base and fine-tuned models
and of the centre-point and uniform-random baselines, on the same queries of one benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from synground_assets.adapters.suite import ModelSuite, model_suite
from synground_assets.config.recipes import Recipe, RecipeError
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.model import GroundingModel
from synground_assets.grounding.pointing_game import (
    PointingGameResult,
    centre_point_baseline,
    evaluate_pointing_game,
    queries_of,
    random_point_baseline,
)
from synground_assets.pipeline.training import CHECKPOINT_SHARD
from synground_assets.records.evaluation_sets import Benchmark
from synground_assets.resources.store import ShardStore


@dataclass
class BenchmarkScores:
    results: dict[str, PointingGameResult]  # base, finetuned, center, random
    metrics: dict[str, float]  # pointing_game/<name> and pointing_game/gain
    queries: int


def finetuned_folder(store: ShardStore, recipe: Recipe) -> Path:
    """The recipe's published checkpoint folder; an error saying what to materialize when absent."""
    checkpoint = store.shard_dir(recipe.name, "finetuned_checkpoint", CHECKPOINT_SHARD)
    if not (checkpoint / "config.json").is_file():
        raise RecipeError(f"recipe {recipe.name!r} has no fine-tuned checkpoint at {checkpoint}; materialize "
                          f"finetuned_checkpoint for partition {recipe.name!r} first")
    return checkpoint


def rematerialize_checkpoint(recipe: str) -> str:
    """What makes a recipe's fine-tuned checkpoint again (an error's fix)."""
    return (f"rematerialize finetuned_checkpoint partition {recipe!r}: dagster asset materialize -m "
            f"synground_assets.definitions --select finetuned_checkpoint --partition '{recipe}'")


def load_finetuned(store: ShardStore, recipe: Recipe, device: str, suite: ModelSuite | None = None) -> GroundingModel:
    """The recipe's published checkpoint, loaded through the suite (default: this process's); a
    corrupt one (a truncated model.safetensors) raises `ModelLoadError` naming its folder and the
    partition to rematerialize."""
    return (suite or model_suite()).load_grounding_model(str(finetuned_folder(store, recipe)), device=device,
                                remake=rematerialize_checkpoint(recipe.name))


def score_benchmark(base: GroundingModel, finetuned: GroundingModel, benchmark: Benchmark) -> BenchmarkScores:
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
    return BenchmarkScores(results, metrics, len(queries))


def per_query_table(triplets: Sequence[Triplet], results: dict[str, PointingGameResult]) -> pd.DataFrame:
    rows = {"item_id": [t.item_id for t in triplets], "phrase": [t.phrase for t in triplets],
            "boxes_xyxy": [str(t.boxes_xyxy) for t in triplets]}
    for name, result in results.items():
        rows[f"{name}_point_xy"] = [str(r.point_xy) for r in result.results]
        rows[f"{name}_hit"] = [r.hit for r in result.results]
    return pd.DataFrame(rows)
