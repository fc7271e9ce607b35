"""The process group of a torchrun job, and the collectives the objective needs across ranks.

`gather_with_grad` is BLIP's `all_gather_with_grad`: every rank gets the whole batch, and the
backward pass sums each rank's gradient of its own slice over all ranks (then DDP averages the
parameter gradients), so W ranks with B / W samples each compute the gradient of the loss of the
global batch of B exactly, not an approximation that drops the cross-rank terms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_world(device_type: str, timeout_s: float) -> World:
    """Join torchrun's process group (env:// rendezvous; NCCL on CUDA, gloo on CPU); one process
    without torchrun's variables is a world of one. A collective that waits longer than `timeout_s`
    on a dead peer fails instead of hanging."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    world = World(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return world


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on every slice
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(b, ...) on each rank -> (W * b, ...) in rank order, differentiable."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """(b, ...) on each rank -> (W * b, ...) in rank order, no gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def sum_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a tensor, differentiable (see `gather_with_grad`)."""
    return gather_with_grad(tensor.unsqueeze(0)).sum(0)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Metrics averaged over ranks (each rank's share is the same size, so this is the global mean)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    names = sorted(values)
    stacked = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    return {n: v / dist.get_world_size() for n, v in zip(names, stacked.tolist())}


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
