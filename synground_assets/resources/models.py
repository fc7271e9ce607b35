"""The model suite: recipe -> role adapters, built on first use and cached per process.

A run over many shards builds each adapter once and reuses it for every shard. Before a stage's
model is built, the other stages' adapters that hold a GPU (`uses_gpu` true) are released
(`release()` frees their GPU memory), so two large models never share one GPU when stages share a
process; CPU adapters stay cached.
"""

from __future__ import annotations

import threading
from typing import Any

from synground_assets.recipes import recipe_book
from synground_assets.roles.registry import build_role

_CACHE: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()
BUILD_COUNT: dict[tuple[str, str], int] = {}  # how often each (recipe, role) was built: tests read it


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


def release_gpu_adapters(except_key: tuple[str, str] | None = None) -> None:
    """Drop the cached adapters that hold a GPU (all but one), calling their `release()`."""
    for key in [k for k in _CACHE if k != except_key and getattr(_CACHE[k], "uses_gpu", False)]:
        _CACHE.pop(key).release()


def clear() -> None:
    """Forget every cached adapter (tests; a changed recipe file)."""
    with _LOCK:
        for adapter in _CACHE.values():
            if callable(getattr(adapter, "release", None)):
                adapter.release()
        _CACHE.clear()
