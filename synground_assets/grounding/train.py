"""Fine-tuning a grounding model on triplets with ITC + ITM + AMC, resumable, framework-free.

`train(config, model, train_triplets, eval_triplets, output_dir)` runs the steps, checkpoints into
`output_dir/checkpoints/` (and resumes from the last one there), scores the pointing game on the
evaluation triplets and writes `output_dir/model/` (weights, processor, `train_config.json`) and
`output_dir/metrics.json`. Metrics go to `log_fn(step, metrics)`, for the caller to record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from synground_assets.grounding.data import Augmentation, TrainBatch, Triplet, TripletStream, make_batch
from synground_assets.grounding.gradcam import cross_attention_gradcam, upsample_cam
from synground_assets.grounding.losses import (
    ContrastiveLoss,
    attention_mask_consistency,
    itm_loss,
    sample_hard_negatives,
)
from synground_assets.grounding.pointing_game import PROTOCOLS, PointingGameResult, evaluate_pointing_game
from synground_assets.items import derive_seed
from synground_assets.grounding.model import TRAIN_CONFIG_FILE, GroundingModel

LogFn = Callable[[int, dict[str, float]], None]
AMP_DTYPES = ("bfloat16", "float16", "float32")
# Fields that may change when a run resumes; any other change needs a new output folder.
RESUMABLE_FIELDS = {"max_steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_batch_size", "eval_resolution",
                    "eval_protocol"}


@dataclass
class TrainConfig:
    # Optimisation (AMC: AdamW lr 1e-5, weight decay 0.02, cosine to 1e-6, batch 64).
    learning_rate: float = 1e-5
    min_learning_rate: float = 1e-6  # the cosine schedule's floor
    weight_decay: float = 0.02  # on weight matrices only, not biases / norms / temperature
    warmup_steps: int = 100  # linear warm-up from 0, in optimizer steps
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 64  # pairs per forward pass; ITC and hard negatives are drawn within it
    grad_accumulation: int = 1  # forward passes per optimizer step
    max_grad_norm: float = 0.0  # 0: no clipping (AMC does not clip)
    # Inputs.
    image_size: int | None = None  # square training resolution; None: the model's own
    max_text_tokens: int = 25  # AMC truncates text to 25 tokens
    gradcam_layer: int | None = None  # text layer for GradCAM; None: the adapter's (a middle fusion layer)
    # Loss: L = itc * L_ITC + itm * L_ITM + amc_mean * L_mean + amc_max * L_max.
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    amc_mean_weight: float = 0.2
    amc_max_weight: float = 0.8
    amc_mean_margin: float = 0.1
    amc_max_margin: float = 0.5
    # Augmentation (AMC: grayscale p=0.2, colour jitter p=0.5; a flip swaps "left"/"right" too).
    horizontal_flip: bool = False
    colour_jitter: bool = True
    grayscale: bool = True
    # Data.
    real_data_ratio: float = 0.0  # share of each batch drawn from the real triplets
    seed: int = 0
    # Hardware.
    amp_dtype: str = "bfloat16"  # autocast dtype on CUDA (float16 adds a grad scaler); CPU runs float32
    # Bookkeeping.
    log_every: int = 50  # steps between log_fn calls
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2
    eval_batch_size: int = 32
    eval_resolution: int | None = None  # pointing-game input resolution; None: the model's own
    eval_protocol: str = "pixel-centre"  # pointing-game protocol (grounding/pointing_game.py): or "amc"

    def __post_init__(self):
        positive = ("learning_rate", "max_steps", "batch_size", "grad_accumulation", "max_text_tokens",
                    "log_every", "checkpoint_every", "keep_checkpoints", "eval_batch_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive but is {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"TrainConfig.batch_size must be at least 2 (in-batch negatives) but is {self.batch_size}")
        if not 0 <= self.real_data_ratio <= 1:
            raise ValueError(f"TrainConfig.real_data_ratio must be in [0, 1] but is {self.real_data_ratio}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"TrainConfig.amp_dtype must be one of {', '.join(AMP_DTYPES)} but is {self.amp_dtype!r}")
        if self.eval_protocol not in PROTOCOLS:
            raise ValueError(f"TrainConfig.eval_protocol must be one of {', '.join(PROTOCOLS)} but is {self.eval_protocol!r}")
        if self.warmup_steps < 0 or self.min_learning_rate < 0 or self.weight_decay < 0:
            raise ValueError("TrainConfig.warmup_steps, min_learning_rate and weight_decay must not be negative")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from a mapping (a recipe's `training` block); unknown keys are an error."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values = {name: _checked(name, known[name].type, value) for name, value in data.items()}
        return cls(**values)

    def augmentation(self) -> Augmentation:
        return Augmentation(horizontal_flip=self.horizontal_flip, colour_jitter=self.colour_jitter, grayscale=self.grayscale)

    @property
    def uses_amc(self) -> bool:
        return self.amc_mean_weight > 0 or self.amc_max_weight > 0


def _checked(name: str, annotation: str, value: Any) -> Any:
    """`value` if it fits the field's annotation ("float", "int | None", ...); ints pass as floats."""
    if value is None and "None" in annotation:
        return value
    kind = annotation.split(" | ")[0]
    fits = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not fits:
        raise ValueError(f"training setting {name!r}: expected {annotation}, got {value!r}")
    return float(value) if kind == "float" else value


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


def training_step(
    model: GroundingModel, objective: GroundingObjective, batch: TrainBatch, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The losses of one batch; "loss" is their weighted sum."""
    config, inputs = objective.config, batch.inputs
    ids, text_mask = inputs.input_ids, inputs.attention_mask  # (B, T)
    # 1. Matched pairs through the fusion encoder, with the GradCAM map when AMC is on.
    if config.uses_amc:
        explained = cross_attention_gradcam(model, inputs, config.gradcam_layer, create_graph=True)
        image_embeds, positive_logits, cam = explained.image_embeds, explained.itm_logits, explained.cam
    else:
        image_embeds = model.encode_image(inputs.pixel_values)  # (B, 1+P, D)
        positive_logits, _ = model.itm_logits(image_embeds, ids, text_mask)  # (B, 2)
    # 2. ITC on the unimodal features.
    image_feat, text_feat = model.contrastive_features(image_embeds, ids, text_mask)  # (B, E) x 2
    loss_itc, logits_i2t = objective.contrastive(image_feat, text_feat, batch.positives)
    # 3. ITM: (image i, its hard negative text) and (the hard negative image of text j, text j).
    negative_texts, negative_images = sample_hard_negatives(logits_i2t, batch.positives, generator)
    negative_logits, _ = model.itm_logits(
        torch.cat([image_embeds, image_embeds[negative_images]]),  # (2B, 1+P, D)
        torch.cat([ids[negative_texts], ids]),  # (2B, T)
        torch.cat([text_mask[negative_texts], text_mask]),
    )
    loss_itm = itm_loss(positive_logits, negative_logits)
    losses = {"itc": loss_itc, "itm": loss_itm}
    total = config.itc_weight * loss_itc + config.itm_weight * loss_itm
    # 4. AMC on the map upsampled to the input resolution, where the box masks are.
    if config.uses_amc:
        cam = upsample_cam(cam.float(), tuple(batch.masks.shape[-2:]))  # (B, H, W)
        loss_mean, loss_max = attention_mask_consistency(cam, batch.masks, config.amc_mean_margin, config.amc_max_margin)
        losses |= {"amc_mean": loss_mean, "amc_max": loss_max}
        total = total + config.amc_mean_weight * loss_mean + config.amc_max_weight * loss_max
    return {"loss": total, **losses}


def train_steps(
    model: GroundingModel,
    objective: GroundingObjective,
    stream: TripletStream,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    start_step: int,
    end_step: int,
    on_step: Callable[[int, dict[str, float]], None],
) -> None:
    """Optimizer steps start_step+1 .. end_step; `on_step(step, metrics)` after each."""
    config = objective.config
    device = model.device
    model.train()
    for step in range(start_step, end_step):
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(config.grad_accumulation):
            index = step * config.grad_accumulation + micro
            triplets, seeds = stream.batch(index)
            batch = make_batch(model, triplets, seeds, config.augmentation(), config.image_size)
            generator = torch.Generator(device).manual_seed(derive_seed(config.seed, "negatives", index))
            with autocast(config, device):
                losses = training_step(model, objective, batch, generator)
            check_finite(losses, step + 1)
            scaler.scale(losses["loss"] / config.grad_accumulation).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value.item() / config.grad_accumulation
        if config.max_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([*model.parameters(), *objective.parameters()], config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        totals["learning_rate"] = scheduler.get_last_lr()[0]
        totals["temperature"] = objective.contrastive.temperature.item()
        on_step(step + 1, totals)


def train(
    config: TrainConfig,
    model: GroundingModel,
    train_triplets: Sequence[Triplet],
    eval_triplets: Sequence[Triplet],
    output_dir: str | os.PathLike,
    log_fn: LogFn | None = None,
    real_triplets: Sequence[Triplet] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place, resuming from the last checkpoint in `output_dir` if any."""
    # 1. Inputs and the pieces of the run.
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.gradcam_layer is None:
        config = dataclasses.replace(config, gradcam_layer=model.gradcam_layer)
    model.gradcam_layer, model.max_text_tokens = config.gradcam_layer, config.max_text_tokens
    torch.manual_seed(config.seed)
    stream = TripletStream(train_triplets, config.batch_size, config.seed, real_triplets or (), config.real_data_ratio)
    objective = GroundingObjective(config).to(model.device)
    optimizer = make_optimizer(config, model, objective)
    scheduler = make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler(model.device.type, enabled=config.amp_dtype == "float16" and model.device.type == "cuda")
    # 2. Resume.
    checkpoints = Checkpoints(output_dir / "checkpoints", config)
    start_step, history = checkpoints.restore(model, objective, optimizer, scheduler, scaler)

    # 3. Train, logging and checkpointing as the steps go.
    def on_step(step: int, metrics: dict[str, float]) -> None:
        history.append({"step": step, **metrics})
        if log_fn and (step % config.log_every == 0 or step == config.max_steps):
            log_fn(step, metrics)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoints.save(step, history, model, objective, optimizer, scheduler, scaler)

    train_steps(model, objective, stream, optimizer, scheduler, scaler, start_step, config.max_steps, on_step)
    # 4. Evaluate and save.
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


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    if not torch.isfinite(losses["loss"]):
        parts = ", ".join(f"{name}={value.item():.4g}" for name, value in losses.items())
        raise FloatingPointError(
            f"non-finite loss at step {step} ({parts}); lower the learning rate, or use amp_dtype "
            "bfloat16/float32 instead of float16"
        )


class Checkpoints:
    """`step-0000500.pt` files in one folder: the whole training state, written atomically."""

    def __init__(self, folder: Path, config: TrainConfig):
        self.folder, self.config = folder, config

    def paths(self) -> list[Path]:
        found = [p for p in self.folder.glob("step-*.pt") if re.fullmatch(r"step-\d+\.pt", p.name)]
        return sorted(found, key=lambda p: int(p.stem.split("-")[1]))

    def save(self, step, history, model, objective, optimizer, scheduler, scaler) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step,
            "config": dataclasses.asdict(self.config),
            "history": history,
            "model": model.state_dict(),
            "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        path = self.folder / f"step-{step:07d}.pt"
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, path)
        for old in self.paths()[: -self.config.keep_checkpoints]:
            old.unlink()
        return path

    def restore(self, model, objective, optimizer, scheduler, scaler) -> tuple[int, list[dict]]:
        """Load the last checkpoint into the given objects; (its step, its history), or (0, [])."""
        paths = self.paths()
        if not paths:
            return 0, []
        state = torch.load(paths[-1], map_location=model.device, weights_only=True)
        saved, current = state["config"], dataclasses.asdict(self.config)
        changed = sorted(k for k in current if k not in RESUMABLE_FIELDS and saved.get(k) != current[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(f"{paths[-1]} was made with other settings ({details}); use a new output folder")
        if state["step"] > self.config.max_steps:
            raise ValueError(f"{paths[-1]} is at step {state['step']}, past max_steps={self.config.max_steps}")
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        return state["step"], list(state["history"])


def save_final(output_dir: Path, model: GroundingModel, config: TrainConfig, metrics: dict[str, float]) -> Path:
    """Write output_dir/model (replacing an older one whole) and output_dir/metrics.json."""
    final, temporary = output_dir / "model", output_dir / "model.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    (temporary / TRAIN_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return final
