"""Shared fixtures: every test gets its own data root, lineage file and Dagster instance folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest


@pytest.fixture
def project_home(tmp_path, monkeypatch):
    """A fresh project folder holding data/ and data/lineage.duckdb for one test."""
    monkeypatch.setenv("SYNGROUND_HOME", str(tmp_path))
    monkeypatch.delenv("SYNGROUND_DATA", raising=False)
    monkeypatch.delenv("SYNGROUND_LINEAGE", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Every tiny model, built into a session folder that `tiny:<name>` references resolve to.
    A CI cache can be reused by setting SYNGROUND_TINY_MODELS before the run."""
    import torch

    from synground_assets import tiny
    from synground_assets.adapters.suite import model_suite
    from synground_assets_tests.tiny_test_models import register_test_models

    # Tiny models run fastest on one thread: on a busy machine, several threads wait on each other
    # for every small matrix product (measured 15x slower on 2 shared cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if not os.environ.get("SYNGROUND_TINY_MODELS"):
            patch.setenv("SYNGROUND_TINY_MODELS", str(tmp_path_factory.mktemp("tiny-models")))
        model_suite().clear()  # adapters cached by earlier tests may point at another tiny-model folder
        register_test_models()
        yield tiny.build_all()
    torch.set_num_threads(threads)
