"""Role specs for the model-backed role tests (the tiny models: `tiny_models` in ../conftest.py)."""

from __future__ import annotations

import pytest

from synground_assets.config.recipes import RoleSpec


@pytest.fixture(scope="session")
def cpu_spec(tiny_models):
    """cpu_spec(adapter, model, batch_size=8, **options) -> a RoleSpec on the CPU."""

    def make(adapter: str, model: str | None, batch_size: int = 8, **options) -> RoleSpec:
        return RoleSpec(adapter=adapter, model=model, device="cpu", batch_size=batch_size, options=options)

    return make
