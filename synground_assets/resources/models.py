"""The model suite: recipe -> role adapters, built on first use and cached per process.

A run over many shards builds each adapter once and reuses it for every shard. Before a stage's
model is built, the other stages' adapters that hold a GPU (their `device` is a CUDA device) are
released (`release()` frees their GPU memory), so two large models never share one GPU when stages
share a process; CPU adapters stay cached.
"""

from __future__ import annotations

import threading
from typing import Any

from synground_assets.recipes import recipe_book
from synground_assets.roles.build import build_role

_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()
BUILD_COUNT: dict[tuple[str, str], int] = {}  # builds of each (recipe, role) since the last clear()


def get_role(recipe_name: str, role: str) -> Any:
    key = (recipe_name, role)
    with _LOCK:
        if key not in _CACHE:
            release_gpu_adapters(except_key=key)
            recipe = recipe_book().get(recipe_name)
            spec = recipe.roles[role]
            _CACHE[key] = build_role(role, spec, recipe=recipe_name)
            BUILD_COUNT[key] = BUILD_COUNT.get(key, 0) + 1
        return _CACHE[key]


def holds_gpu(adapter: Any) -> bool:
    return getattr(getattr(adapter, "device", None), "type", None) == "cuda"


def release_gpu_adapters(except_key: tuple[str, str] | None = None) -> None:
    """Drop the cached adapters that hold a GPU (all but one), calling their `release()`."""
    for key in [k for k in _CACHE if k != except_key and holds_gpu(_CACHE[k])]:
        _CACHE.pop(key).release()


def clear() -> None:
    """Forget every cached adapter (tests; a changed recipe file); GPU ones give their memory back."""
    with _LOCK:
        release_gpu_adapters()
        _CACHE.clear()
        BUILD_COUNT.clear()
