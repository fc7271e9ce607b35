"""`finetuned_checkpoint`: the recipe's grounding model fine-tuned on all its triplets, with its
objective (`amc`, MLM + ITA + ITM + AMC, for ALBEF; `itc-itm-amc`, ITC + ITM + AMC, for BLIP).

`pipeline/training.py` splits and indexes every published `boxes` shard of the recipe (plus real
triplets when the recipe mixes them) into a working folder; this asset starts the training there as
a torchrun job (`python -m synground_assets.ops.finetune`, `nproc_per_node` ranks; see that module)
through Dagster Pipes. Rank 0 logs to MLflow, publishes the model folder (`save_pretrained`:
safetensors, processor, resolved training config, the shards and triplet counts used) and reports
its metadata back here. Training resumes from its last checkpoint after a crash (of any rank): the
working folder is keyed by everything that defines the run. The shards used go to lineage.
"""

import os
import re
import sys
from pathlib import Path

import dagster as dg

from synground_assets.assets.exports import model_licence
from synground_assets.assets.provenance import Provenance
from synground_assets.assets.quality_report import box_filter_settings, log_quality_report, recipe_quality_report
from synground_assets.config.recipes import recipe_book
from synground_assets.grounding.visualize import gradcam_figure
from synground_assets.ops.dagster_internals import DagsterPipesExecutionError
from synground_assets.ops.finetune import MlflowTarget, PublishTarget, TrainingJob
from synground_assets.ops.processes import FolderInUseError, check_working_folder
from synground_assets.partitions import recipe_partitions
from synground_assets.pipeline.scoring import rematerialize_checkpoint
from synground_assets.pipeline.training import CHECKPOINT_SHARD, prepare_training
from synground_assets.records.previews import image_markdown
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource, TrackingResource
from synground_assets.resources.logged_model import ModelCardFacts, log_grounding_model, model_card


class FinetuneConfig(dg.Config):
    """Run-time overrides (launchpad / `--config-json`), e.g. a short smoke run."""

    max_steps: int | None = None
    batch_size: int | None = None  # the global batch (the recipe's `training.batch_size` by default)
    # Register the logged model in MLflow's model registry under this name (a new version per run).
    registered_model_name: str | None = None


@dg.asset(
    deps=[dg.AssetDep("boxes",
                      partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="recipe"))],
    partitions_def=recipe_partitions,
    code_version="1",
    group_name="learning",
    pool="gpu",
    kinds={"pytorch", "mlflow"},
)
def finetuned_checkpoint(
    context: dg.AssetExecutionContext, config: FinetuneConfig, store: StoreResource, lineage: LineageResource,
    tracking: TrackingResource, suite: ModelSuiteResource,
) -> dg.MaterializeResult:
    """The recipe's grounding model fine-tuned on every published triplet of the recipe."""
    # 1. Inputs, indexed into Parquet files in the working folder.
    recipe = recipe_book().get(context.partition_key)
    shard_store = store.store()
    inputs = prepare_training(shard_store, recipe, config.max_steps, config.batch_size)
    settings, work = inputs.settings, inputs.work
    context.log.info(f"{inputs.synthetic_triplets} synthetic + {inputs.real_triplets} real training triplets, "
                     f"{inputs.held_out_source} held out; {inputs.ranks} rank(s) per node; working folder {work}")
    # 2. Train as a torchrun job through Pipes; rank 0 logs to MLflow (with the config training used),
    # publishes and reports back.
    provenance = Provenance.of(context)
    tags = provenance.tags(recipe=recipe.name, partition=context.partition_key, stage="finetune")
    with tracking.tracking().run(f"finetune {recipe.name}", tags) as run:
        run.log_params({"base_model": recipe.grounding_model.model, "base_revision": inputs.spec.revision or "",
                        "synthetic_triplets": inputs.synthetic_triplets, "real_triplets": inputs.real_triplets,
                        "held_out_source": inputs.held_out_source, "shards": len(inputs.shard_counts),
                        "nproc_per_node": inputs.ranks})
        job = TrainingJob(
            settings, inputs.spec, inputs.index, inputs.held_out_index, str(work),
            mlflow=MlflowTarget(run.tracking_uri, run.run_id),
            publish=PublishTarget(str(shard_store.root), recipe.name, "finetuned_checkpoint", CHECKPOINT_SHARD,
                                  tables={"table.parquet": str(work / "table.parquet")},
                                  provenance={"recipe": recipe.name, "base_model": recipe.grounding_model.model,
                                              "dagster_run_id": provenance.run_id,
                                              "code_version": provenance.code_version,
                                              "held_out": inputs.held_out_source}))
        (work / "job.json").write_text(job.to_json())
        reported = run_training_job(context, work, inputs.ranks)
        lineage_index = lineage.lineage()
        lineage_index.refresh(shard_store.root)
        # What the quality filters removed from the shards this checkpoint trained on.
        log_quality_report(run, recipe_quality_report(lineage_index, recipe.name, list(inputs.shard_counts.shard)),
                           work, box_filter_settings(recipe))
        published = shard_store.shard_dir(recipe.name, "finetuned_checkpoint", CHECKPOINT_SHARD)
        card = model_card(ModelCardFacts(
            recipe.name, recipe.grounding_model.model, inputs.spec.revision or "",
            model_licence(recipe.grounding_model.model),
            settings.objective or f"the {inputs.spec.adapter} adapter's default", settings.max_steps,
            inputs.synthetic_triplets, inputs.real_triplets, len(inputs.shard_counts), inputs.held_out_source or "",
            {k: float(getattr(v, "value", v)) for k, v in reported.items()
             if k in ("held_out_pointing_game", "final_loss")},
            context.run_id))
        model_uri = log_grounding_model(run, published, card, work, config.registered_model_name)
    # 3. Lineage: which triplets trained this checkpoint.
    checkpoint_id = f"{recipe.name}@{context.run_id}"
    lineage_index.replace("checkpoint_shards", inputs.shard_counts.assign(
        checkpoint_id=checkpoint_id, recipe=recipe.name, **provenance.columns()), {"checkpoint_id": checkpoint_id})
    trained = suite.suite().load_grounding_model(published, device="cpu", remake=rematerialize_checkpoint(recipe.name))
    figure = gradcam_figure(trained, inputs.held_out_preview, settings.eval_resolution, settings.eval_protocol)
    return dg.MaterializeResult(metadata={
        **reported,
        "synthetic_triplets": inputs.synthetic_triplets,
        "real_triplets": inputs.real_triplets,
        "shards": len(inputs.shard_counts),
        "checkpoint_id": checkpoint_id,
        "mlflow_model_uri": model_uri,
        "gradcam_preview": dg.MetadataValue.md(image_markdown(figure)),
    })


def run_training_job(context: dg.AssetExecutionContext, work: Path, ranks: int) -> dict:
    """torchrun the job on this node through Pipes; rank 0's reported metadata. A failed rank
    (crash, kill -9, a peer's collective timeout) fails the whole job; the error says how to resume.
    torchrun starts through `synground_assets.ops.launcher`: it and its ranks die with this process, and
    a job whose working folder another job's processes still hold fails at once, naming them."""
    try:
        check_working_folder(work)
    except FolderInUseError as exc:
        raise dg.Failure(description=str(exc), metadata={"working_folder": dg.MetadataValue.path(str(work))}) from exc
    command = [sys.executable, "-m", "synground_assets.ops.launcher", "--parent", str(os.getpid()), "--working-folder",
               str(work), "--", sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", "-m", "synground_assets.ops.finetune", str(work / "job.json")]
    context.log.info("launching " + " ".join(command))
    try:
        invocation = dg.PipesSubprocessClient().run(context=context, command=command)
    except DagsterPipesExecutionError as exc:
        steps = [int(m.group(1)) for p in (work / "checkpoints").glob("step-*.pt")
                 if (m := re.fullmatch(r"step-(\d+)\.pt", p.name))]
        resume = f"the last checkpoint is step {max(steps)}" if steps else "no checkpoint was written yet"
        raise dg.Failure(
            description=f"the training job failed ({exc}); torchrun's summary in the step's output names the failed "
                        f"rank and its exit code or signal. {resume} in {work / 'checkpoints'}: rematerialize to "
                        "resume from it.",
            metadata={"last_checkpoint_step": max(steps, default=0),
                      "working_folder": dg.MetadataValue.path(str(work))},
        ) from exc
    return dict(invocation.get_materialize_result().metadata)
