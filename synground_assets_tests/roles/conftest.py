"""Tiny random-weight models for the model-backed role tests, built once per test session."""

from __future__ import annotations

import os

import pytest

from synground_assets.recipes import RoleSpec


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Every tiny model, built into a session folder that `tiny:<name>` references resolve to.
    A CI cache can be reused by setting SYNGROUND_TINY_MODELS before the run."""
    import torch

    from synground_assets.roles import tiny

    # Tiny models run fastest on one thread: on a busy machine, several threads wait on each other
    # for every small matrix product (measured 15x slower on 2 shared cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if not os.environ.get("SYNGROUND_TINY_MODELS"):
            patch.setenv("SYNGROUND_TINY_MODELS", str(tmp_path_factory.mktemp("tiny-models")))
        yield tiny.build_all()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cpu_spec(tiny_models):
    """cpu_spec(adapter, model, batch_size=8, **options) -> a RoleSpec on the CPU."""

    def make(adapter: str, model: str | None, batch_size: int = 8, **options) -> RoleSpec:
        return RoleSpec(adapter=adapter, model=model, device="cpu", batch_size=batch_size, options=options)

    return make
