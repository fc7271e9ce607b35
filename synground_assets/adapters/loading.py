"""What loading any model needs, below every adapter: the error a model that cannot be loaded raises,
the device and the dtype a recipe names."""

from __future__ import annotations

import torch

from synground_assets.roles.spec import ModelLoadError

__all__ = ["ModelLoadError", "resolve_device", "resolve_dtype"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error, not a silent CPU run."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "device 'cuda' was asked for but no CUDA GPU is available to torch "
            f"(torch {torch.__version__}, cuda build: {torch.version.cuda or 'none'}); "
            "set `device: cpu` or `device: auto` in the recipe, or run on a GPU machine"
        )
    if device not in ("cpu", "cuda"):
        raise ModelLoadError(f"device must be one of cpu, cuda, auto but is {device!r}")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {', '.join(DTYPES)} but is {dtype!r}")
    return DTYPES[dtype]
