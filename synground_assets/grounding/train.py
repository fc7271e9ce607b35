"""Fine-tuning a grounding model on triplets with ITC + ITM + AMC, resumable, framework-free.

`train(config, model, train_data, eval_triplets, output_dir)` runs the steps, checkpoints into
`output_dir/checkpoints/` (and resumes from the last one there), scores the pointing game on the
evaluation triplets and writes `output_dir/model/` (weights, processor, `train_config.json`) and
`output_dir/metrics.json`. Metrics go to `log_fn(step, metrics)`, for the caller to record.

Under torchrun (`python -m synground_assets.finetune`), every rank runs `train` with its `World`:
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
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from synground_assets.grounding import distributed
from synground_assets.grounding.checkpoints import Checkpoints, save_final
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.data import Augmentation, Triplet
from synground_assets.grounding.distributed import World
from synground_assets.grounding.gradcam import cross_attention_gradcam, upsample_cam
from synground_assets.grounding.loader import BatchPlan, LoadedBatch, TripletIndex, make_loader, write_triplets_index
from synground_assets.grounding.losses import (
    ContrastiveLoss,
    attention_mask_consistency,
    itm_loss,
    sample_hard_negatives,
)
from synground_assets.grounding.pointing_game import PointingGameResult, evaluate_pointing_game
from synground_assets.items import derive_seed
from synground_assets.grounding.model import GroundingModel

LogFn = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    model_path: Path | None = None
    pointing_game: PointingGameResult | None = None


class GroundingObjective(nn.Module):
    """The loss's own parameters (the ITC temperature) and its weights."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.contrastive = ContrastiveLoss()


class TrainingModule(nn.Module):
    """Model + objective as one module whose forward is a training step, so DistributedDataParallel
    sees one forward per backward (the GradCAM map's inner autograd.grad stays inside it)."""

    def __init__(self, model: GroundingModel, objective: GroundingObjective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: LoadedBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return training_step(self.model, self.objective, batch, generator)


def pad_text(ids: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, T) -> (b, length) with pad id 0 and mask 0: every rank's text the same width, to gather."""
    extra = length - ids.shape[1]
    return F.pad(ids, (0, extra)), F.pad(mask, (0, extra))


def training_step(
    model: GroundingModel, objective: GroundingObjective, batch: LoadedBatch, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The losses of this rank's share of a global batch; "loss" is their weighted sum. Across
    ranks: ITC features and ITM negatives are gathered with gradient, L_mean's sums are summed."""
    config, inputs = objective.config, batch.inputs
    # 0. Text padded to the global batch's longest, so rows can be gathered from other ranks.
    width = int(distributed.gather(torch.tensor([inputs.input_ids.shape[1]], device=inputs.input_ids.device)).max())
    ids, text_mask = pad_text(inputs.input_ids, inputs.attention_mask, width)  # (b, T)
    inputs = dataclasses.replace(inputs, input_ids=ids, attention_mask=text_mask)
    # 1. Matched pairs through the fusion encoder, with the GradCAM map when AMC is on.
    if config.uses_amc:
        explained = cross_attention_gradcam(model, inputs, config.gradcam_layer, create_graph=True)
        image_embeds, positive_logits, cam = explained.image_embeds, explained.itm_logits, explained.cam
    else:
        image_embeds = model.encode_image(inputs.pixel_values)  # (b, 1+P, D)
        positive_logits, _ = model.itm_logits(image_embeds, ids, text_mask)  # (b, 2)
    # 2. ITC on the unimodal features, against the global batch.
    image_feat, text_feat = model.contrastive_features(image_embeds, ids, text_mask)  # (b, E) x 2
    all_image_feat, all_text_feat = distributed.gather_with_grad(image_feat), distributed.gather_with_grad(text_feat)  # (B, E)
    image_ids, phrase_keys = distributed.gather(batch.image_ids), distributed.gather(batch.phrase_keys)  # (B,)
    positives = (image_ids[:, None] == image_ids[None]) | (phrase_keys[:, None] == phrase_keys[None])  # (B, B)
    local = slice(distributed.rank() * len(ids), (distributed.rank() + 1) * len(ids))  # this rank's rows
    loss_itc, _ = objective.contrastive(image_feat, text_feat, positives[local], all_image_feat, all_text_feat)
    # 3. ITM: (image i, its hard negative text) and (the hard negative image of text j, text j),
    # drawn from the global batch with one generator state on every rank, so the draws agree.
    with torch.no_grad():
        global_logits = all_image_feat @ all_text_feat.t() / objective.contrastive.temperature  # (B, B)
    negative_texts, negative_images = sample_hard_negatives(global_logits, positives, generator)  # (B,) x 2
    negative_texts, negative_images = negative_texts[local], negative_images[local]  # (b,) x 2
    all_ids, all_text_mask = distributed.gather(ids), distributed.gather(text_mask)  # (B, T)
    all_image_embeds = distributed.gather_with_grad(image_embeds)  # (B, 1+P, D)
    negative_logits, _ = model.itm_logits(
        torch.cat([image_embeds, all_image_embeds[negative_images]]),  # (2b, 1+P, D)
        torch.cat([all_ids[negative_texts], ids]),  # (2b, T)
        torch.cat([all_text_mask[negative_texts], text_mask]),
    )
    loss_itm = itm_loss(positive_logits, negative_logits)
    losses = {"itc": loss_itc, "itm": loss_itm}
    total = config.itc_weight * loss_itc + config.itm_weight * loss_itm
    # 4. AMC on the map upsampled to the input resolution, where the box masks are.
    if config.uses_amc:
        cam = upsample_cam(cam.float(), tuple(batch.masks.shape[-2:]))  # (b, H, W)
        loss_mean, loss_max = attention_mask_consistency(
            cam, batch.masks, config.amc_mean_margin, config.amc_max_margin, distributed.sum_with_grad)
        losses |= {"amc_mean": loss_mean, "amc_max": loss_max}
        total = total + config.amc_mean_weight * loss_mean + config.amc_max_weight * loss_max
    return {"loss": total, **losses}


def train_steps(
    module: nn.Module,
    config: TrainConfig,
    batches: Iterator[LoadedBatch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    steps: range,
    world: World,
    on_step: Callable[[int, dict[str, float]], None],
) -> None:
    """Optimizer steps steps.start+1 .. steps.stop; `on_step(step, metrics)` after each, with the
    metrics averaged over ranks. `module` is the TrainingModule, DDP-wrapped when distributed."""
    training = module.module if isinstance(module, DistributedDataParallel) else module
    device = training.model.device
    parameters = list(training.parameters())
    module.train()
    for step in steps:
        # Dropout (if the model has any) draws from a seed of (rank, step): resumable anywhere.
        torch.manual_seed(derive_seed(config.seed, "dropout", world.rank, step))
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(config.grad_accumulation):
            index = step * config.grad_accumulation + micro
            batch = next(batches).to(device)
            generator = torch.Generator(device).manual_seed(derive_seed(config.seed, "negatives", index))
            last = micro == config.grad_accumulation - 1
            # Gradients are all-reduced once per optimizer step, on its last micro-batch.
            sync = contextlib.nullcontext() if last or not world.distributed else module.no_sync()
            with sync:
                with autocast(config, device):
                    losses = module(batch, generator)
                scaler.scale(losses["loss"] / config.grad_accumulation).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value.item() / config.grad_accumulation
        totals = distributed.mean_over_ranks(totals, device)
        check_finite(totals, step + 1)
        if config.max_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        totals["learning_rate"] = scheduler.get_last_lr()[0]
        totals["temperature"] = training.objective.contrastive.temperature.item()
        on_step(step + 1, totals)


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
    if config.batch_size % world.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world.world_size} ranks")
    if config.gradcam_layer is None:
        config = dataclasses.replace(config, gradcam_layer=model.gradcam_layer)
    model.gradcam_layer, model.max_text_tokens = config.gradcam_layer, config.max_text_tokens
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    index = train_data if isinstance(train_data, TripletIndex) else index_triplets(train_data, real_triplets, output_dir / f"index-{world.rank}")
    torch.manual_seed(config.seed)
    objective = GroundingObjective(config).to(model.device)
    optimizer = make_optimizer(config, model, objective)
    scheduler = make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler(model.device.type, enabled=config.amp_dtype == "float16" and model.device.type == "cuda")
    # 2. Resume (every rank reads rank 0's last checkpoint).
    checkpoints = Checkpoints(output_dir / "checkpoints", config)
    start_step, history = checkpoints.restore(model, objective, optimizer, scheduler, scaler)
    module: nn.Module = TrainingModule(model, objective)
    if world.distributed:
        device_ids = [model.device.index] if model.device.type == "cuda" else None
        module = DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
    # 3. The data: this rank's share of each global batch, loaded by worker processes.
    resolution = config.image_size or model.image_size()
    plan = BatchPlan(index, config.batch_size, config.seed, config.real_data_ratio)
    model.train()  # the training preprocessor (an ALBEF one truncates the text only while training)
    loader = make_loader(index, plan, model.preprocessor(), resolution, config.augmentation(),
                         (start_step * config.grad_accumulation, config.max_steps * config.grad_accumulation),
                         world.rank, world.world_size, config.num_workers, model.device.type == "cuda", config.prefetch_factor)

    # 4. Train; rank 0 logs and checkpoints as the steps go.
    def on_step(step: int, metrics: dict[str, float]) -> None:
        if not world.is_main:
            return
        history.append({"step": step, **metrics})
        if log_fn and (step % config.log_every == 0 or step == config.max_steps):
            log_fn(step, metrics)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoints.save(step, history, model, objective, optimizer, scheduler, scaler)

    train_steps(module, config, iter(loader), optimizer, scheduler, scaler, range(start_step, config.max_steps), world, on_step)
    if not world.is_main:
        return TrainResult(metrics={}, history=[])
    # 5. Evaluate and save (rank 0).
    metrics = {"steps": float(config.max_steps)}
    if history:
        metrics |= {f"final_{k}": v for k, v in history[-1].items() if k != "step"}
    pointing = None
    if eval_triplets:
        pointing = evaluate_pointing_game(model, eval_triplets, config.eval_resolution, config.eval_batch_size,
                                          protocol=config.eval_protocol)
        metrics["pointing_game_accuracy"] = pointing.accuracy
        if log_fn:
            log_fn(config.max_steps, {"pointing_game_accuracy": pointing.accuracy})
    model_path = save_final(output_dir, model, config, metrics)
    return TrainResult(metrics=metrics, history=history, model_path=model_path, pointing_game=pointing)


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


def make_optimizer(config: TrainConfig, model: GroundingModel, objective: nn.Module) -> torch.optim.AdamW:
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the learning rate, then cosine down to the floor at max_steps."""
    floor = config.min_learning_rate / config.learning_rate

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
