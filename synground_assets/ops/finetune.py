"""The fine-tuning job, one process per rank under torchrun, readable and runnable without Dagster:

    torchrun --standalone --nproc_per_node 2 -m synground_assets.ops.finetune job.json

`job.json` (a `TrainingJob`, written by the `finetuned_checkpoint` asset, or by hand):
    config          TrainConfig fields (grounding/config.py)
    model           the grounding-model RoleSpec (adapter, model, revision, dtype, device, options)
    index           Parquet index files of the training triplets (grounding/loader.py)
    held_out_index  a Parquet index of the held-out queries, or null
    output_dir      the working folder: checkpoints (resume), model/, metrics.json
    mlflow          {tracking_uri, run_id} of a run to log into, or null
    publish         {root, recipe, asset, shard, tables: {name: parquet}, provenance: {...}}, or null

Every rank trains (grounding.train); rank 0 alone logs to MLflow, publishes the model folder as a
shard (one rename) and, when started through Dagster Pipes (`dg.PipesSubprocessClient`), reports
progress, metrics, the MLflow run id and the published path back to the asset. Each rank's device
is cuda:LOCAL_RANK when the spec allows CUDA and one is visible, else the CPU (gloo).
`SYNGROUND_TORCH_THREADS` sets each rank's torch threads (default: torch's, which torchrun caps
at 1 through OMP_NUM_THREADS when several ranks share a node). Training is bitwise reproducible
(a rerun, a resume) with one thread only: with several, CPU reductions split differently from run
to run (two default-thread runs differed by up to 7.4e-3 in a weight, as measured for issue 30).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, PipesContext, open_dagster_pipes

from synground_assets.adapters.suite import model_suite
from synground_assets.config import settings
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.distributed import World, close_world, init_world
from synground_assets.grounding.loader import TripletIndex
from synground_assets.grounding.train import TrainResult, resolved_config, train
from synground_assets.ops.processes import guard_training_process
from synground_assets.ops.run_health import ensure_run_started
from synground_assets.resources.store import ShardStore, table_path
from synground_assets.resources.tracking import TrackedRun, Tracking
from synground_assets.roles.spec import RoleSpec


@dataclass(frozen=True)
class MlflowTarget:
    """The MLflow run the asset opened, for rank 0 to log into."""

    tracking_uri: str
    run_id: str


@dataclass(frozen=True)
class PublishTarget:
    """Where rank 0 publishes the trained model: one shard of the store, with extra tables and the
    provenance the asset built (written as provenance.json)."""

    root: str
    recipe: str
    asset: str
    shard: str
    tables: dict[str, str] = field(default_factory=dict)  # file name in the shard -> Parquet file to copy
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingJob:
    """What crosses the process boundary to torchrun: one typed value, written as `job.json`."""

    config: TrainConfig
    model: RoleSpec  # the grounding model, its location resolved
    index: list[str]
    held_out_index: str | None
    output_dir: str
    mlflow: MlflowTarget | None = None
    publish: PublishTarget | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingJob:
        return cls(config=TrainConfig.from_dict(data["config"]), model=RoleSpec(**data["model"]),
                   index=list(data["index"]), held_out_index=data.get("held_out_index"),
                   output_dir=data["output_dir"],
                   mlflow=MlflowTarget(**data["mlflow"]) if data.get("mlflow") else None,
                   publish=PublishTarget(**data["publish"]) if data.get("publish") else None)

    @classmethod
    def from_json(cls, text: str) -> TrainingJob:
        return cls.from_dict(json.loads(text))

    @property
    def dagster_run_id(self) -> str | None:
        return self.publish.provenance.get("dagster_run_id") if self.publish else None


def rank_device(spec: RoleSpec) -> torch.device:
    if spec.device != "cpu" and torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def reporter(world: World):
    """Rank 0's Pipes context when Dagster started the job; nothing otherwise."""
    if world.is_main and os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR):
        return open_dagster_pipes()
    return contextlib.nullcontext(None)


def run_job(job: TrainingJob | dict) -> TrainResult:
    job = job if isinstance(job, TrainingJob) else TrainingJob.from_dict(job)
    check_publish(job.publish)  # a bad name fails now, not after the training
    # Recorded for the run's cleanup; dies with torchrun; holds the working folder against a second job.
    guard_training_process(job.dagster_run_id, job.output_dir)
    device = rank_device(job.model)
    world = init_world(device.type, job.config.collective_timeout_s)
    try:
        with reporter(world) as pipes:
            return train_and_publish(job, device, world, pipes)
    finally:
        close_world()


def train_and_publish(job: TrainingJob, device: torch.device, world: World, pipes: PipesContext | None) -> TrainResult:
    config = job.config
    # 1. Inputs.
    model = model_suite().load_grounding_model(job.model, device=device)  # a copy of its own: training changes it
    index = TripletIndex.read(*job.index)
    held_out = []
    if world.is_main and job.held_out_index:
        queries = TripletIndex.read(job.held_out_index)
        held_out = [queries.triplet(row) for row in range(len(queries))]
    run = tracked_run(job.mlflow)

    def log(step: int, metrics: dict[str, float]) -> None:
        line = f"step {step}/{config.max_steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        if pipes:
            pipes.log.info(line)
        else:
            print(line, flush=True)

    # 2. Train on every rank; rank 0 logs the config training runs with (the adapter's objective and
    # GradCAM layer filled in, as train_config.json holds it) before the first step.
    if run and world.is_main:
        run.log_params({f"train.{k}": v for k, v in asdict(resolved_config(config, model)).items()})
    if pipes:
        pipes.log.info(f"training on {world.world_size} rank(s), {device.type}, {len(index)} triplets, "
                       f"global batch {config.batch_size}")
    result = train(config, model, index, held_out, job.output_dir, log_fn=log, world=world)
    if not world.is_main:
        return result
    # 3. Rank 0: MLflow metrics, publish, report.
    if run:
        run.log_metric_history(result.history, prefix="train/")
        run.log_metrics({"pointing_game/held_out": result.metrics.get("pointing_game_accuracy", float("nan"))})
    published = publish(job.publish, result, run)
    if pipes:
        pipes.report_asset_materialization(metadata=report_metadata(config, world, result, run, published))
    return result


def tracked_run(target: MlflowTarget | None) -> TrackedRun | None:
    if not target:
        return None
    tracking = Tracking(target.tracking_uri)
    return TrackedRun(tracking.client, target.run_id, tracking.experiment_id(), tracking.tracking_uri)


def check_publish(target: PublishTarget | None) -> None:
    """The publish place and every table name of a (possibly hand-edited) job.json name a shard and
    files inside the data root; `UnsafePathError` names the bad one otherwise."""
    if not target:
        return
    folder = ShardStore(target.root).shard_dir(target.recipe, target.asset, target.shard)
    for name in target.tables:
        table_path(folder, name)


def publish(target: PublishTarget | None, result: TrainResult, run: TrackedRun | None) -> Path | None:
    """The trained model folder + the given tables + provenance.json, published as one shard."""
    if not target:
        return None
    store = ShardStore(target.root)
    run_id = target.provenance.get("dagster_run_id", "")
    with store.writing(target.recipe, target.asset, target.shard, run_id=run_id,
                       before_publish=lambda: ensure_run_started(run_id)) as folder:
        shutil.copytree(result.model_path, folder, dirs_exist_ok=True)
        for name, path in target.tables.items():
            shutil.copy(path, table_path(folder, name))
        provenance = {**target.provenance, "mlflow_run_id": run.run_id if run else None,
                      "metrics": result.metrics}
        (folder / "provenance.json").write_text(json.dumps(provenance, indent=2))
        if run:
            run.log_artifact(folder / "train_config.json")
            run.log_artifact(folder / "provenance.json")
    return store.shard_dir(target.recipe, target.asset, target.shard)


def report_metadata(config: TrainConfig, world: World, result: TrainResult, run: TrackedRun | None,
                    published: Path | None) -> dict:
    metadata = {
        "steps": config.max_steps,
        "world_size": world.world_size,
        "global_batch_size": config.batch_size,
        "held_out_pointing_game": {"raw_value": result.metrics.get("pointing_game_accuracy", float("nan")),
                                   "type": "float"},
        "final_loss": {"raw_value": result.metrics.get("final_loss", float("nan")), "type": "float"},
    }
    if run:
        metadata |= {"mlflow_run_id": run.run_id, "mlflow_run_url": {"raw_value": run.url, "type": "url"}}
    if published:
        metadata["path"] = {"raw_value": str(published), "type": "path"}
    return metadata


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: torchrun [--nproc_per_node N ...] -m synground_assets.ops.finetune JOB.json")
    threads = torch_threads()
    job = TrainingJob.from_json(Path(argv[0]).read_text())
    torch.set_num_threads(threads)
    run_job(job)


def torch_threads() -> int:
    """`SYNGROUND_TORCH_THREADS` (a whole number >= 1), else torch's current count."""
    value = settings.torch_threads()
    if not value:
        return torch.get_num_threads()
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"SYNGROUND_TORCH_THREADS={value!r}: expected a whole number >= 1 (1 for bitwise "
                         "reproducible training), or unset for torch's default")
    return int(value)


def job_spec(config: TrainConfig, spec: RoleSpec, index: list[str], held_out_index: str | None, output_dir: str,
             mlflow: MlflowTarget | None = None, publish: PublishTarget | None = None) -> dict:
    """A TrainingJob's job.json content as a dict (for scripts that write it with json.dumps)."""
    return TrainingJob(config, spec, index, held_out_index, output_dir, mlflow, publish).to_dict()


if __name__ == "__main__":
    main()
