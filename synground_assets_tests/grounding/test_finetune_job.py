"""A hand-edited job.json cannot publish outside the data root (issue 30, item 5)."""

from __future__ import annotations

import pytest

from synground_assets.config.recipes import RoleSpec
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.train import TrainResult
from synground_assets.ops.finetune import PublishTarget, job_spec, publish, run_job
from synground_assets.resources.store import UnsafePathError, write_table

ESCAPE = "../../../escape.parquet"  # from the staging folder <root>/r/finetuned_checkpoint/.tmp-...: out of <root>


def settings(tmp_path, tables: dict[str, str]) -> PublishTarget:
    return PublishTarget(root=str(tmp_path / "data"), recipe="r", asset="finetuned_checkpoint", shard="model",
                         tables=tables, provenance={})


@pytest.fixture
def table(tmp_path):
    import pandas as pd

    return str(write_table(tmp_path, pd.DataFrame({"a": [1]}), "counts.parquet"))


def test_a_table_name_with_dot_dot_is_refused_before_training(tmp_path, table):
    job = job_spec(TrainConfig(max_steps=1), RoleSpec(adapter="blip", model="tiny:blip-itm-shapes", device="cpu"),
                   [], None, str(tmp_path / "work"), publish=settings(tmp_path, {ESCAPE: table}))
    with pytest.raises(UnsafePathError, match=r"table name '\.\./\.\./\.\./escape\.parquet' cannot name"):
        run_job(job)  # raises before any model load or training
    assert not (tmp_path / "work").exists()


def test_the_publish_itself_refuses_a_table_name_with_dot_dot(tmp_path, table):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(UnsafePathError, match="table name"):
        publish(settings(tmp_path, {ESCAPE: table}), TrainResult({}, model_path=model), None)
    assert not (tmp_path / "escape.parquet").exists() and not list((tmp_path / "data").rglob("*.parquet"))
    published = publish(settings(tmp_path, {"table.parquet": table}), TrainResult({}, model_path=model), None)
    assert (published / "table.parquet").is_file()


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_thread_count_is_named_before_anything_runs(monkeypatch, tmp_path, value):
    from synground_assets.ops.finetune import main

    monkeypatch.setenv("SYNGROUND_TORCH_THREADS", value)
    with pytest.raises(SystemExit, match=f"SYNGROUND_TORCH_THREADS={value!r}: expected a whole number >= 1"):
        main([str(tmp_path / "job.json")])  # (the job file does not even exist)


def test_the_thread_count_is_read(monkeypatch):
    import torch

    from synground_assets.ops.finetune import torch_threads

    monkeypatch.setenv("SYNGROUND_TORCH_THREADS", "1")
    assert torch_threads() == 1
    monkeypatch.delenv("SYNGROUND_TORCH_THREADS")
    assert torch_threads() == torch.get_num_threads()
