"""Fine-tuning a grounding model on triplets, resumable, framework-free.

`train(config, model, train_data, eval_triplets, output_dir)` builds the run (objective, optimizer,
schedule, data), resumes from the last checkpoint in `output_dir/checkpoints/`, runs `train_loop`,
scores the pointing game on the evaluation triplets and writes `output_dir/model/` (weights,
processor, `train_config.json`) and `output_dir/metrics.json`. Metrics go to `log_fn(step,
metrics)`, for the caller to record. The losses themselves are `grounding/objective.py`.

Under torchrun (`python -m synground_assets.ops.finetune`), every rank runs `train` with its `World`:
the model is wrapped in DistributedDataParallel, each rank loads its B / W share of every global
batch, and the objective gathers features across ranks so that ITC, the ITM hard negatives and
AMC's pooled L_mean are those of the global batch: W ranks with B / W compute the same loss and
gradient as one rank with B (up to float summation order). Rank 0 alone logs, checkpoints,
evaluates and saves. The batch plan and the per-step seeds depend on the global step only, so a
checkpoint resumes on any world size that divides the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import synground_assets.grounding.distributed as distributed
from synground_assets.grounding.amc import AmcObjective
from synground_assets.grounding.checkpoints import Checkpoints, TrainingState, save_final
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.distributed import World
from synground_assets.grounding.loader import BatchPlan, LoadedBatch, TripletIndex, make_loader, write_triplets_index
from synground_assets.grounding.model import GroundingModel
from synground_assets.grounding.objective import GroundingObjective, TrainingModule
from synground_assets.grounding.optim import make_optimizer, make_scheduler
from synground_assets.grounding.pointing_game import PointingGameResult, evaluate_pointing_game
from synground_assets.records.items import derive_seed

LogFn = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    model_path: Path | None = None
    pointing_game: PointingGameResult | None = None
    # The config training used (rank 0): the adapter's GradCAM layer and objective filled in, as
    # train_config.json holds it; what the caller logs.
    config: TrainConfig | None = None


def train_loop(module: nn.Module, state: TrainingState, batches: Iterator[LoadedBatch], steps: range,
               config: TrainConfig, world: World, on_step: LogFn) -> None:
    """Optimizer steps steps.start+1 .. steps.stop; `on_step(step, metrics)` after each, the metrics
    averaged over ranks. `module` is the TrainingModule, DDP-wrapped when distributed."""
    device, accumulation = state.model.device, config.grad_accumulation
    module.train()
    for step in steps:
        # Dropout (if the model has any) draws from a seed of (rank, step): resumable anywhere.
        torch.manual_seed(derive_seed(config.seed, "dropout", world.rank, step))
        state.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(accumulation):
            batch, forward_index = next(batches).to(device), step * accumulation + micro
            generator = torch.Generator(device).manual_seed(derive_seed(config.seed, "negatives", forward_index))
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            with gradient_sync(module, world, micro == accumulation - 1):
                with autocast(config, device):
                    losses = module(batch, generator, forward_index)
                state.scaler.scale(losses["loss"] / accumulation).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value.item() / accumulation
        totals = distributed.mean_over_ranks(totals, device)
        check_finite(totals, step + 1)
        if config.max_grad_norm > 0:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(module.parameters(), config.max_grad_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        on_step(step + 1, totals | {"learning_rate": state.scheduler.get_last_lr()[0],
                                    "temperature": state.objective.temperature})


def train(
    config: TrainConfig,
    model: GroundingModel,
    train_data: TripletIndex | Sequence[Triplet],
    eval_triplets: Sequence[Triplet],
    output_dir: str | os.PathLike,
    log_fn: LogFn | None = None,
    real_triplets: Sequence[Triplet] | None = None,
    world: World | None = None,
) -> TrainResult:
    """Fine-tune `model` in place, resuming from the last checkpoint in `output_dir` if any.
    `train_data` is an index (real rows included) or, in-process, a list of synthetic triplets
    (plus `real_triplets`), indexed first. On ranks other than 0 the result holds no metrics."""
    # 1. Inputs and the pieces of the run.
    world = world or World()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = prepare_model(config, model, world)
    index = (train_data if isinstance(train_data, TripletIndex)
             else index_triplets(train_data, real_triplets, output_dir / f"index-{world.rank}"))
    torch.manual_seed(config.seed)
    state = new_training_state(config, model, forwards_per_epoch=len(index) // config.batch_size)
    # 2. Resume (every rank reads rank 0's last checkpoint).
    checkpoints = Checkpoints(output_dir / "checkpoints", config)
    start_step, history = checkpoints.restore(state)
    module: nn.Module = TrainingModule(model, state.objective)
    if world.distributed:
        device_ids = [model.device.index] if model.device.type == "cuda" else None
        module = DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
    # 3. The data: this rank's share of each global batch, loaded by worker processes.
    plan = BatchPlan(index, config.batch_size, config.seed, config.real_data_ratio)
    model.train()  # the training preprocessor (an ALBEF one truncates the text only while training)
    loader = make_loader(index, plan, model.preprocessor(), config.image_size or model.image_size(),
                         config.augmentation(),
                         (start_step * config.grad_accumulation, config.max_steps * config.grad_accumulation),
                         world.rank, world.world_size, config.num_workers, model.device.type == "cuda",
                         config.prefetch_factor, mask_style="amc" if config.objective == "amc" else "pixel-centre")

    # 4. Train; rank 0 logs and checkpoints as the steps go.
    def on_step(step: int, metrics: dict[str, float]) -> None:
        if not world.is_main:
            return
        history.append({"step": step, **metrics})
        if log_fn and (step % config.log_every == 0 or step == config.max_steps):
            log_fn(step, metrics)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoints.save(step, history, state)

    train_loop(module, state, iter(loader), range(start_step, config.max_steps), config, world, on_step)
    if not world.is_main:
        return TrainResult(metrics={}, history=[])
    # 5. Evaluate and save (rank 0).
    return evaluate_and_save(config, model, eval_triplets, output_dir, history, log_fn)


def prepare_model(config: TrainConfig, model: GroundingModel, world: World) -> TrainConfig:
    """Check the config against the world, set the model's GradCAM layer and truncation; the config
    with the adapter's GradCAM layer and objective filled in."""
    if config.batch_size % world.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world.world_size} ranks")
    problems = model.limits().problems(config)
    if problems:  # refused before the first step, not at save_pretrained after the whole run
        raise ValueError("; ".join(problems))
    config = resolved_config(config, model)
    model.gradcam_layer, model.max_text_tokens = config.gradcam_layer, config.max_text_tokens
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return config


def resolved_config(config: TrainConfig, model: GroundingModel) -> TrainConfig:
    """The config training runs with: the adapter's GradCAM layer and objective where it names none."""
    if config.gradcam_layer is None:
        config = dataclasses.replace(config, gradcam_layer=model.gradcam_layer)
    if config.objective is None:
        config = dataclasses.replace(config, objective=model.default_objective)
    return config


def new_objective(config: TrainConfig, model: GroundingModel, forwards_per_epoch: int) -> nn.Module:
    if config.objective == "amc":
        if not hasattr(model, "mlm_logits"):
            raise ValueError(f"objective amc needs a model with ALBEF's pretraining heads (adapter albef), not "
                             f"{type(model).__name__}; use objective itc-itm-amc")
        return AmcObjective(config, model, forwards_per_epoch)
    return GroundingObjective(config).to(model.device)


def new_training_state(config: TrainConfig, model: GroundingModel, forwards_per_epoch: int) -> TrainingState:
    objective = new_objective(config, model, forwards_per_epoch)
    optimizer = make_optimizer(config, model, objective)
    scaler = torch.amp.GradScaler(model.device.type,
                                  enabled=config.amp_dtype == "float16" and model.device.type == "cuda")
    steps_per_epoch = max(1, forwards_per_epoch // config.grad_accumulation)
    return TrainingState(model, objective, optimizer, make_scheduler(config, optimizer, steps_per_epoch), scaler)


def evaluate_and_save(config: TrainConfig, model: GroundingModel, eval_triplets: Sequence[Triplet], output_dir: Path,
                      history: list[dict[str, float]], log_fn: LogFn | None) -> TrainResult:
    metrics = {"steps": float(config.max_steps)}
    if history:
        metrics |= {f"final_{k}": v for k, v in history[-1].items() if k != "step"}
    pointing = None
    if eval_triplets:
        pointing = evaluate_pointing_game(model, eval_triplets, config.eval_resolution, config.eval_batch_size,
                                          protocol=config.eval_protocol, gradcam_mode=config.gradcam_mode)
        metrics["pointing_game_accuracy"] = pointing.accuracy
        if log_fn:
            log_fn(config.max_steps, {"pointing_game_accuracy": pointing.accuracy})
    model_path = save_final(output_dir, model, config, metrics)
    return TrainResult(metrics=metrics, history=history, model_path=model_path, pointing_game=pointing,
                       config=config)


def index_triplets(synthetic: Sequence[Triplet], real: Sequence[Triplet] | None, folder: Path) -> TripletIndex:
    """An index over in-memory triplet lists (images held in memory are written as PNGs)."""
    shutil.rmtree(folder, ignore_errors=True)
    paths = [write_triplets_index(synthetic, folder, "synthetic")]
    if real:
        paths.append(write_triplets_index(real, folder, "real"))
    return TripletIndex.read(*paths)


def enable_gradient_checkpointing(model: GroundingModel) -> None:
    """Recompute the transformers encoders' activations in backward (non-reentrant, so the GradCAM
    map's double backward goes through it)."""
    found = [m for m in model.modules() if getattr(m, "supports_gradient_checkpointing", False)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no transformers model supporting gradient checkpointing")
    for module in found:
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def gradient_sync(module: nn.Module, world: World, last_micro_batch: bool):
    """DDP's all-reduce on the last micro-batch of an optimizer step only."""
    return contextlib.nullcontext() if last_micro_batch or not world.distributed else module.no_sync()


def autocast(config: TrainConfig, device: torch.device):
    if device.type != "cuda" or config.amp_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, config.amp_dtype))


def check_finite(losses: dict[str, float], step: int) -> None:
    """Stop on a non-finite loss (the same on every rank: the values are averaged over ranks)."""
    if not math.isfinite(losses["loss"]):
        parts = ", ".join(f"{name}={value:.4g}" for name, value in losses.items())
        raise FloatingPointError(
            f"non-finite loss at step {step} ({parts}); lower the learning rate, or use amp_dtype "
            "bfloat16/float32 instead of float16"
        )
