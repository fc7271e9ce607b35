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
