"""The training configuration: a typed dataclass with commented defaults, saved next to the model it made.

Torch-free, so that a recipe's `training:` block is validated when the recipe file loads, before
any model library is imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synground_assets.grounding.data import Augmentation

AMP_DTYPES = ("bfloat16", "float16", "float32")
DEFAULT_MAX_TEXT_TOKENS = 25  # AMC truncates text to 25 tokens
PROTOCOLS = ("amc", "pixel-centre")  # pointing-game protocols (grounding/pointing_game.py)
# Objectives (grounding/objective.py, grounding/amc.py): `amc` is AMC-grounding's pretraining loss on
# ALBEF (MLM + ITA with momentum distillation and queues + ITM + AMC); `itc-itm-amc` is ITC with its
# own temperature and spread targets + ITM + AMC, for models without an MLM head (BLIP, shapes).
OBJECTIVES = ("amc", "itc-itm-amc")
GRADCAM_MODES = ("itm", "itc")
# Learning-rate schedules (grounding/optim.py): `warmup-cosine` warms up linearly over `warmup_steps`,
# then follows a per-step cosine to `min_learning_rate` at `max_steps`; `amc` is AMC-grounding's
# (Pretrain.py with timm's CosineLRScheduler): step-wise warm-up from `warmup_lr` in epoch 0, then
# a cosine per epoch down to `min_learning_rate`.
SCHEDULES = ("warmup-cosine", "amc")  # evaluation maps: cross-attention of the match logit, or ALBEF's ITC mode


@dataclass
class TrainConfig:
    # Optimisation (AMC: AdamW lr 1e-5, weight decay 0.02, cosine to 1e-6, batch 64).
    learning_rate: float = 1e-5
    min_learning_rate: float = 1e-6  # the cosine schedule's floor
    weight_decay: float = 0.02  # on weight matrices only, not biases / norms / temperature
    schedule: str = "warmup-cosine"  # one of SCHEDULES
    warmup_steps: int = 100  # warmup-cosine: linear warm-up from 0, in optimizer steps
    warmup_lr: float = 1e-6  # amc: the rate epoch 0 starts from (AMC configs/Pretrain.yaml `warmup_lr`)
    warmup_epochs: int = 20  # amc: warm-up updates in epoch 0, one per `warmup_step_size` steps (`warmup_epochs`)
    warmup_step_size: int = 100  # amc: steps between those updates (Pretrain.py `step_size`)
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 64  # global pairs per forward pass, split over the ranks; ITC and hard negatives see all of it
    grad_accumulation: int = 1  # forward passes per optimizer step
    max_grad_norm: float = 0.0  # 0: no clipping (AMC does not clip)
    # Inputs.
    image_size: int | None = None  # square training resolution; None: the model's own
    max_text_tokens: int = 25  # AMC truncates text to 25 tokens
    gradcam_layer: int | None = None  # text layer for GradCAM; None: the adapter's (a middle fusion layer)
    # Loss: L = mlm * L_MLM (amc only) + itc * L_ITC + itm * L_ITM + amc_mean * L_mean + amc_max * L_max.
    objective: str | None = None  # one of OBJECTIVES; None: the adapter's default (albef: amc, blip: itc-itm-amc)
    mlm_weight: float = 1.0
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    amc_mean_weight: float = 0.2
    amc_max_weight: float = 0.8
    amc_mean_margin: float = 0.1
    amc_max_margin: float = 0.5
    # The `amc` objective's momentum distillation (AMC configs/Pretrain.yaml).
    mlm_probability: float = 0.15
    momentum: float = 0.995  # momentum encoders: p_m <- m * p_m + (1 - m) * p, every forward
    queue_size: int = 65536  # image and text feature queues (momentum features of past global batches)
    distill_alpha: float = 0.4  # weight of the momentum model's soft targets; ramped from 0 over the first epoch
    # Augmentation (AMC: grayscale p=0.2, colour jitter p=0.5; a flip swaps "left"/"right" too).
    horizontal_flip: bool = False
    colour_jitter: bool = True
    grayscale: bool = True
    # Data.
    real_data_ratio: float = 0.0  # share of each batch drawn from the real triplets
    seed: int = 0
    # Hardware.
    amp_dtype: str = "bfloat16"  # autocast dtype on CUDA (float16 adds a grad scaler); CPU runs float32
    gradient_checkpointing: bool = False  # recompute encoder activations in backward: less memory, ~30% slower
    num_workers: int = 2  # data-loader processes per rank (load, augment, resize); 0: in the training process
    prefetch_factor: int = 4  # batches each worker keeps ready
    collective_timeout_s: float = 600.0  # a rank waiting longer on a dead peer fails the job instead of hanging
    # Bookkeeping.
    log_every: int = 50  # steps between log_fn calls
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2
    eval_batch_size: int = 32
    eval_resolution: int | None = None  # pointing-game input resolution; None: the model's own
    eval_protocol: str = "pixel-centre"  # pointing-game protocol (grounding/pointing_game.py): or "amc"
    gradcam_mode: str = "itm"  # held-out evaluation map: "itm", or "itc" (ALBEF Grounding.py's ITC mode; ALBEF only)

    def __post_init__(self):
        positive = ("learning_rate", "max_steps", "batch_size", "grad_accumulation", "max_text_tokens",
                    "log_every", "checkpoint_every", "keep_checkpoints", "eval_batch_size", "prefetch_factor",
                    "collective_timeout_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive but is {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"TrainConfig.batch_size must be at least 2 (in-batch negatives) but is {self.batch_size}")
        if not 0 <= self.real_data_ratio <= 1:
            raise ValueError(f"TrainConfig.real_data_ratio must be in [0, 1] but is {self.real_data_ratio}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"TrainConfig.amp_dtype must be one of {', '.join(AMP_DTYPES)} but is {self.amp_dtype!r}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ValueError(f"TrainConfig.objective must be one of {', '.join(OBJECTIVES)} (or null: the adapter's) "
                             f"but is {self.objective!r}")
        for name in ("mlm_probability", "momentum", "distill_alpha"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1] but is {getattr(self, name)}")
        if self.queue_size < 1:
            raise ValueError(f"TrainConfig.queue_size must be positive but is {self.queue_size}")
        if self.gradcam_mode not in GRADCAM_MODES:
            raise ValueError(f"TrainConfig.gradcam_mode must be one of {', '.join(GRADCAM_MODES)} "
                             f"but is {self.gradcam_mode!r}")
        if self.eval_protocol not in PROTOCOLS:
            raise ValueError(f"TrainConfig.eval_protocol must be one of {', '.join(PROTOCOLS)} "
                             f"but is {self.eval_protocol!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {', '.join(SCHEDULES)} but is {self.schedule!r}")
        if self.warmup_step_size <= 0 or self.warmup_epochs < 0 or self.warmup_lr < 0:
            raise ValueError("TrainConfig.warmup_step_size must be positive, warmup_epochs and warmup_lr "
                             "must not be negative")
        if self.warmup_steps < 0 or self.min_learning_rate < 0 or self.weight_decay < 0 or self.num_workers < 0:
            raise ValueError("TrainConfig.warmup_steps, min_learning_rate, weight_decay and num_workers "
                             "must not be negative")

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
        from synground_assets.grounding.data import Augmentation  # torch: not needed to validate a recipe

        return Augmentation(horizontal_flip=self.horizontal_flip, colour_jitter=self.colour_jitter,
                            grayscale=self.grayscale)

    @property
    def uses_amc(self) -> bool:
        return self.amc_mean_weight > 0 or self.amc_max_weight > 0


@dataclass(frozen=True)
class ModelLimits:
    """What a grounding model allows of a training config, known from its config alone, so that a
    setting that would fail late (at the first step, or at `save_pretrained` after the whole run) is
    refused when the recipe loads and again before training starts."""

    model: str  # how the error names the model
    text_layers: int
    first_gradcam_layer: int  # ALBEF: fusion_layer (GradCAM reads cross-attention); BLIP: 0
    patch_size: int
    max_positions: int  # text position embeddings

    @classmethod
    def from_config(cls, model: str, data: dict[str, Any]) -> ModelLimits | None:
        """From a model's `config.json` contents: the project's ALBEF format, or transformers' BLIP
        (whose file leaves out defaults: BlipTextConfig 12 layers, 512 positions; BlipVisionConfig
        patch 16). None for a format this does not know."""
        try:
            if data.get("model_type") == "albef":
                return cls(model, int(data["text_layers"]), int(data["fusion_layer"]), int(data["patch_size"]),
                           int(data["max_position_embeddings"]))
            if data.get("model_type") == "blip":
                text, vision = data.get("text_config") or {}, data.get("vision_config") or {}
                return cls(model, int(text.get("num_hidden_layers", 12)), 0, int(vision.get("patch_size", 16)),
                           int(text.get("max_position_embeddings", 512)))
        except (KeyError, TypeError, ValueError):
            return None
        return None

    def problems(self, config: TrainConfig) -> list[str]:
        """Each setting of `config` this model cannot train with, as 'training.<field> ...: fix'."""
        found = []
        last = self.text_layers - 2  # the last layer's GradCAM gradient vanishes off [CLS]
        if config.gradcam_layer is not None and not self.first_gradcam_layer <= config.gradcam_layer <= last:
            found.append(f"training.gradcam_layer must be in [{self.first_gradcam_layer}, {last}] for {self.model} "
                         f"({self.text_layers} text layers; not the last, whose gradient vanishes off [CLS]) "
                         f"but is {config.gradcam_layer}")
        for name in ("image_size", "eval_resolution"):
            value = getattr(config, name)
            if value is not None and value % self.patch_size:
                found.append(f"training.{name} must be a multiple of {self.model}'s patch size {self.patch_size} "
                             f"(a whole patch grid) but is {value}")
        if config.max_text_tokens > self.max_positions:
            found.append(f"training.max_text_tokens must be at most {self.model}'s {self.max_positions} text "
                         f"positions but is {config.max_text_tokens}")
        return found


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
