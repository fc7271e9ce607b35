"""Checkpoints of a training run (written by rank 0, read by every rank of a rerun) and the final model folder."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.model import TRAIN_CONFIG_FILE, GroundingModel
from synground_assets.ops.permissions import apply_umask

# Fields that may change when a run resumes; any other change needs a new output folder.
RESUMABLE_FIELDS = {"max_steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_batch_size",
                    "eval_resolution", "eval_protocol", "gradcam_mode", "num_workers", "prefetch_factor",
                    "collective_timeout_s", "gradient_checkpointing"}


@dataclass
class TrainingState:
    """What a checkpoint holds besides the step and history; a resumed run restores all of it."""

    model: GroundingModel
    objective: nn.Module  # the loss's own parameters and buffers
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def state_dict(self) -> dict:
        return {name: getattr(self, name).state_dict() for name in STATE_PARTS}

    def load_state_dict(self, state: dict) -> None:
        for name in STATE_PARTS:
            getattr(self, name).load_state_dict(state[name])


STATE_PARTS = ("model", "objective", "optimizer", "scheduler", "scaler")


class CheckpointWriteError(OSError):
    """A checkpoint or model folder that could not be written (a full disk, a quota); the partial
    file is gone and the message names the folder and its free space."""


def tensor_bytes(state) -> int:
    """The bytes of every tensor in a nested state dict: about what its file needs on disk."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def write_failed(what: str, partial: Path, needed: int, exc: BaseException) -> CheckpointWriteError:
    """Remove the partial file or folder of a failed write; the error to raise. torch reports a full
    disk as `inline_container.cc ... unexpected pos` (a RuntimeError), so any failure of the write
    is named with the folder's free space, whatever its type."""
    if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.unlink(missing_ok=True)
    folder = partial.parent
    try:
        free = _megabytes(shutil.disk_usage(folder).free)
    except OSError:
        free = "unknown"
    error = CheckpointWriteError(
        f"{what} could not be written to {folder} ({type(exc).__name__}: {exc}); {free} free there, the write "
        f"needs about {_megabytes(needed)}: free space (or lower training.keep_checkpoints) and rematerialize to "
        "resume from the last whole checkpoint")
    error.errno = getattr(exc, "errno", None)  # ENOSPC when the OS said so (torch's RuntimeError does not)
    return error


class Checkpoints:
    """`step-0000500.pt` files in one folder: the whole training state, written atomically by rank
    0. No random state is saved: data order, augmentations, negatives and dropout are seeded by
    the step, which is what lets a run resume on another number of ranks."""

    def __init__(self, folder: Path, config: TrainConfig):
        self.folder, self.config = folder, config

    def paths(self) -> list[Path]:
        found = [p for p in self.folder.glob("step-*.pt") if re.fullmatch(r"step-\d+\.pt", p.name)]
        return sorted(found, key=lambda p: int(p.stem.split("-")[1]))

    def save(self, step: int, history: list[dict], training: TrainingState) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"step": step, "config": dataclasses.asdict(self.config), "history": history, **training.state_dict()}
        path = self.folder / f"step-{step:07d}.pt"
        temporary = path.with_suffix(".tmp")
        try:
            # Through a file this block closes: given a path, torch's writer keeps its descriptor open
            # while its exception lives, and the removed partial file's space is not freed until then.
            with open(temporary, "wb") as file:
                torch.save(state, file)
        except (OSError, RuntimeError) as exc:
            raise write_failed(f"checkpoint step {step}", temporary, tensor_bytes(state), exc) from exc
        os.replace(temporary, path)
        for old in self.paths()[: -self.config.keep_checkpoints]:
            old.unlink()
        return path

    def restore(self, training: TrainingState) -> tuple[int, list[dict]]:
        """Load the last checkpoint into the given objects; (its step, its history), or (0, [])."""
        paths = self.paths()
        if not paths:
            return 0, []
        state = torch.load(paths[-1], map_location=training.model.device, weights_only=True)
        saved, current = state["config"], dataclasses.asdict(self.config)
        changed = sorted(k for k in current if k not in RESUMABLE_FIELDS and saved.get(k) != current[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(f"{paths[-1]} was made with other settings ({details}); use a new output folder")
        if state["step"] > self.config.max_steps:
            raise ValueError(f"{paths[-1]} is at step {state['step']}, past max_steps={self.config.max_steps}")
        training.load_state_dict(state)
        return state["step"], list(state["history"])


def save_final(output_dir: Path, model: GroundingModel, config: TrainConfig, metrics: dict[str, float]) -> Path:
    """Write output_dir/model (replacing an older one whole) and output_dir/metrics.json."""
    final, temporary = output_dir / "model", output_dir / "model.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(temporary)
        (temporary / TRAIN_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2))
    except (OSError, RuntimeError) as exc:
        raise write_failed("the trained model folder", temporary, tensor_bytes(model.state_dict()), exc) from exc
    apply_umask(temporary)  # save_pretrained's weights are 0600: the folder is copied into a shared shard
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return final
