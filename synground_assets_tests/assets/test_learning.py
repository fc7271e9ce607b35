"""finetuned_checkpoint and benchmark_scores on the shapes recipe, with MLflow and lineage."""

import re
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from transformers import BlipForImageTextRetrieval

from synground_assets.adapters.grounding import load_grounding_model
from synground_assets.config.recipes import BUILTIN_RECIPES
from synground_assets.definitions import GENERATION_ASSETS, LEARNING_ASSETS
from synground_assets.grounding.gradcam import cross_attention_gradcam
from synground_assets.grounding.pointing_game import heatmap_point
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource, TrackingResource
from synground_assets.resources.lineage import Lineage, default_lineage_path
from synground_assets.resources.store import default_data_root
from synground_assets.resources.tracking import Tracking, default_tracking_uri

finetuned_checkpoint, benchmark_scores = LEARNING_ASSETS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One shard generated, a short fine-tuning run, and two benchmark partitions scored."""
    home = tmp_path_factory.mktemp("home")
    book = yaml.safe_load(BUILTIN_RECIPES.read_text())  # the built-in recipes, with smaller evaluation sets
    book["recipes"]["shapes"]["training"]["held_out_queries"] = 64
    book["benchmarks"] = {"shapes_test": {"max_queries": 96}}
    (home / "recipes.yaml").write_text(yaml.safe_dump(book))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNGROUND_HOME", str(home))
        patch.setenv("SYNGROUND_RECIPES", str(home / "recipes.yaml"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        resources = {"store": StoreResource(), "lineage": LineageResource(), "suite": ModelSuiteResource(),
                     "tracking": TrackingResource()}
        instance = dg.DagsterInstance.ephemeral()
        assert dg.materialize(GENERATION_ASSETS, partition_key="shapes|00000", instance=instance,
                              resources=resources).success
        training = dg.materialize([finetuned_checkpoint], partition_key="shapes", instance=instance,
                                  resources=resources,
                                  run_config={"ops": {"finetuned_checkpoint": {"config": {
                                      "max_steps": 12, "registered_model_name": "shapes-grounding"}}}})
        scored = {
            benchmark: dg.materialize([benchmark_scores], instance=instance, resources=resources,
                                      partition_key=dg.MultiPartitionKey({"benchmark": benchmark, "recipe": "shapes"}))
            for benchmark in ["shapes_test", "refcoco+_testA"]
        }
        yield home, training, scored, default_tracking_uri(), default_data_root(), default_lineage_path()


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_checkpoint_is_published_and_reloads_with_from_pretrained(trained):
    _, training, _, _, data_root, _ = trained
    assert training.success
    folder = data_root / "shapes" / "finetuned_checkpoint" / "model"
    assert {"config.json", "model.safetensors", "train_config.json", "provenance.json", "table.parquet"} <= {
        p.name for p in folder.iterdir()}
    model = BlipForImageTextRetrieval.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) > 100_000
    meta = metadata(training)
    assert meta["steps"] == 12 and meta["synthetic_triplets"] > 150 and meta["shards"] == 1
    # Reported by the torchrun job's rank 0 through Pipes: one rank on the CPU (nproc_per_node auto).
    assert meta["world_size"] == 1 and meta["global_batch_size"] == 64 and meta["path"] == str(folder)
    assert 0.0 <= meta["held_out_pointing_game"] <= 1.0
    assert meta["gradcam_preview"].startswith("![preview](data:image/png;base64,")


def test_training_is_logged_to_a_finished_mlflow_run_and_lineage(trained):
    _, training, _, uri, _, lineage_path = trained
    run = MlflowClient(uri).get_run(metadata(training)["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == "12" and run.data.params["base_model"] == "tiny:blip-itm-shapes"
    assert run.data.params["train.objective"] == "itc-itm-amc"  # what training ran with, not the recipe's None
    assert run.data.tags["dagster_run_id"] == training.run_id
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "train/loss")) == 12
    assert "pointing_game/held_out" in run.data.metrics
    # The quality report of the shards it trained on travels with the run.
    assert run.data.metrics["quality/images/items_in"] == 64 and run.data.metrics["quality/boxes/kept"] > 150
    # ... with the recipe's box filters, on or off (docs/box-verification.md).
    assert run.data.params["quality/box_filters/detectors"] == "detector (shapes)"
    assert run.data.params["quality/box_filters/ensemble"] == "off (one detector)"
    assert run.data.params["quality/box_filters/verify"] == "off"
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert "quality_report.csv" in artifacts
    used = Lineage(lineage_path).query("SELECT shard, triplets FROM checkpoint_shards WHERE checkpoint_id = ?",
                                       [metadata(training)["checkpoint_id"]])
    assert used.shard.tolist() == ["00000"] and used.triplets[0] > 150


def test_the_checkpoint_is_a_registered_mlflow_model_that_points_with_its_card(trained):
    _, training, _, uri, data_root, _ = trained
    meta = metadata(training)
    mlflow.set_tracking_uri(uri)
    (version,) = MlflowClient(uri).search_model_versions("name = 'shapes-grounding'")
    assert version.run_id == meta["mlflow_run_id"]
    model = mlflow.pyfunc.load_model("models:/shapes-grounding/1")
    assert model.metadata.get_input_schema().input_names() == ["image", "phrase"]
    images = sorted((data_root / "shapes" / "images").rglob("*.png"))[:2]
    table = pd.DataFrame({"image": [str(images[0]), images[1].read_bytes()], "phrase": ["red circle", "blue square"]})
    points = model.predict(table)
    assert list(points.columns) == ["point_x", "point_y"] and len(points) == 2
    # The same point as the grounding model's own GradCAM gives (the pointing game's point).
    grounding = load_grounding_model(data_root / "shapes" / "finetuned_checkpoint" / "model", device="cpu")
    picture = Image.open(images[0]).convert("RGB")
    cam = cross_attention_gradcam(grounding, grounding.preprocess([picture], ["red circle"])).cam[0]
    assert tuple(points.iloc[0]) == heatmap_point(cam.float(), picture.size)
    card = Path(mlflow.artifacts.download_artifacts(f"runs:/{meta['mlflow_run_id']}/README.md"))
    text = card.read_text()
    assert "base_model: tiny:blip-itm-shapes" in text and "| steps | 12 |" in text and "held_out_pointing_game" in text
    assert "random weights built by this project" in text  # a tiny: base model's licence, as the dataset card says
    # Rows are explained in batches (params batch_size, default 32): each row's point is its own.
    one_by_one = model.predict(table, params={"batch_size": 1})
    pd.testing.assert_frame_equal(points, one_by_one)
    with pytest.raises(Exception, match="row 0: the image cannot be read"):
        model.predict(pd.DataFrame({"image": ["/nowhere.png"], "phrase": ["x"]}))
    with pytest.raises(Exception, match="row 2: the image cannot be read"):
        model.predict(pd.concat([table, pd.DataFrame({"image": ["/nowhere.png"], "phrase": ["x"]})]))


def test_shapes_benchmark_scores_four_metrics_in_a_finished_run(trained):
    _, _, scored, uri, _, lineage_path = trained
    result = scored["shapes_test"]
    assert result.success
    meta = metadata(result)
    assert meta["status"] == "scored" and meta["queries"] == 96
    run = MlflowClient(uri).get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    for name in ["base", "finetuned", "center", "gain"]:
        assert f"pointing_game/{name}" in run.data.metrics
    assert run.data.metrics["pointing_game/gain"] == pytest.approx(
        run.data.metrics["pointing_game/finetuned"] - run.data.metrics["pointing_game/base"])
    assert run.data.tags["dagster_run_id"] == result.run_id
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert {"per_query.csv", "gradcam_overlays.png"} <= artifacts
    stored = Lineage(lineage_path).query("SELECT * FROM benchmark_scores WHERE benchmark = 'shapes_test'")
    assert stored.finetuned[0] == pytest.approx(meta["pointing_game/finetuned"])


def test_an_absent_benchmark_is_reported_absent_not_zero(trained):
    _, _, scored, uri, _, _ = trained
    result = scored["refcoco+_testA"]
    assert result.success
    meta = metadata(result)
    assert meta["status"] == "absent" and "benchmarks.refcoco+_testA.root" in meta["reason"]
    assert not any(k.startswith("pointing_game") for k in meta)
    runs = MlflowClient(uri).search_runs([Tracking(uri).experiment_id()], "tags.benchmark = 'refcoco+_testA'")
    assert runs == []


def test_a_failing_block_ends_its_mlflow_run_as_failed(project_home):
    tracking = Tracking()
    with pytest.raises(RuntimeError, match="non-finite"):
        with tracking.run("broken") as run:
            raise RuntimeError("non-finite loss at step 3")
    assert tracking.client.get_run(run.run_id).info.status == "FAILED"


def test_the_paper_table_prints_the_logged_scores(trained, capsys):
    from synground_assets.records.paper_table import main

    _, _, scored, uri, _, _ = trained
    meta = metadata(scored["shapes_test"])
    main(["--tracking-uri", uri])
    lines = capsys.readouterr().out.splitlines()
    finetuned = next(line for line in lines if line.startswith("shapes: fine-tuned"))
    assert finetuned.split(" | ")[-1] == f"{meta['pointing_game/finetuned'] * 100:.2f}"
    assert finetuned.split(" | ")[1] == "-"  # RefCOCO+ testA is absent here: no number is made up
    assert any(line.startswith("SynGround | real + models | 2,627,952 | 79.06") for line in lines)


def test_the_summary_prints_the_scored_pointing_game_and_its_mlflow_run(trained, capsys, monkeypatch):
    """`cli summary`, the end of `make demo`: triplets and yield, the pointing game of the base model,
    the fine-tuned model and the centre baseline as `benchmark_scores` recorded them, the MLflow run."""
    from synground_assets.ops import cli

    home, _, scored, uri, _, _ = trained
    monkeypatch.setenv("SYNGROUND_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    meta = metadata(scored["shapes_test"])
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    triplets = Lineage(default_lineage_path()).query("SELECT count(*) AS n FROM boxes WHERE recipe = 'shapes'").n[0]
    assert f"shapes: {triplets} triplets (image, phrase, box) from 1 shard(s), yield " in out
    assert "pointing game, recipe shapes on shapes_test (96 queries):" in out
    def printed(label: str) -> str:
        return re.search(rf"^  {label} +(.+)$", out, re.M).group(1)

    for label, metric in [("centre baseline", "center"), ("base model", "base"), ("fine-tuned model", "finetuned")]:
        assert printed(label).split()[0] == f"{meta[f'pointing_game/{metric}']:.3f}", (label, out)
    assert printed("fine-tuned model").endswith(f"({meta['pointing_game/gain']:+.3f} over the base model)")
    run = MlflowClient(uri).get_run(meta["mlflow_run_id"])
    assert printed("MLflow run").split() == [
        run.info.run_id, f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"]
    assert f"mlflow ui --backend-store-uri {uri}" in out and "make ui" in out
    assert "refcoco+_testA" not in out  # an absent benchmark has no score to print
