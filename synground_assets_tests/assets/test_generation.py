"""The generation assets, materialized as users do: through Dagster, on the shapes recipe."""

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import dagster as dg

from synground_assets.adapters.suite import ModelSuite
from synground_assets.definitions import GENERATION_ASSETS
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.lineage import Lineage, default_lineage_path
from synground_assets.resources.store import ShardStore, default_data_root
from synground_assets.tiny.shapes import ShapesImageGenerator


def materialize(partition_key: str, instance=None, models=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        GENERATION_ASSETS,
        partition_key=partition_key,
        instance=instance or dg.DagsterInstance.ephemeral(),
        resources={"store": StoreResource(), "lineage": LineageResource(), "suite": models or ModelSuiteResource()},
        raise_on_error=False,
    )


def shard_digests(store: ShardStore, shard: str) -> dict[str, str]:
    """Digests of a shard's data files in every stage (its lineage rows and publish manifest name the
    run and the time, so they differ between runs by design)."""
    digests = {}
    for stage in ["concepts", "descriptions", "images", "phrases", "boxes"]:
        folder = store.shard_dir("shapes", stage, shard)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != "publish.json" and path.parent.name != "lineage":
                digests[f"{stage}/{path.relative_to(folder)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def test_two_shards_materialize_with_metadata_and_passing_checks(project_home):
    instance = dg.DagsterInstance.ephemeral()
    for shard in ["00000", "00001"]:
        result = materialize(f"shapes|{shard}", instance)
        assert result.success
        assert all(check.passed for check in result.get_asset_check_evaluations())
    store = ShardStore(default_data_root())
    for stage in ["concepts", "descriptions", "images", "phrases", "boxes"]:
        assert store.shards("shapes", stage) == ["00000", "00001"]
    events = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert events["concepts"]["items"].value == 64
    assert events["images"]["images"].value == 64
    assert events["boxes"]["yield"].value >= 0.95
    assert events["boxes"]["preview"].value.startswith("![preview](data:image/jpeg;base64,")
    assert "| item_id | description |" in events["descriptions"]["preview"].value
    assert events["boxes"]["model_id"].text == "shapes-v1"


def test_rematerializing_a_shard_writes_byte_identical_files(project_home):
    assert materialize("shapes|00003").success
    store = ShardStore(default_data_root())
    first = shard_digests(store, "00003")
    assert materialize("shapes|00003").success
    assert len(first) > 64 + 5  # the images and every table
    assert shard_digests(store, "00003") == first


def test_lineage_gives_the_full_chain_of_a_box_without_duplicates_after_a_rerun(project_home):
    result = materialize("shapes|00002")
    assert result.success and materialize("shapes|00002").success
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    box = lineage.query("SELECT box_id FROM boxes ORDER BY box_id LIMIT 1").box_id[0]
    chain = lineage.query("SELECT * FROM box_provenance WHERE box_id = ?", [box]).iloc[0]
    assert chain.phrase.lower() in chain.description.lower()
    assert chain.image_path.startswith("shapes/images/00002/images/")
    assert (default_data_root() / chain.image_path).is_file()
    assert len(chain.concepts) >= 2 and chain.item_seed > 0 and chain.image_seed > 0
    assert chain.detector_model == chain.generator_model == "shapes-v1"
    assert chain.partition_key == "shapes|00002" and chain.boxes_run_id and chain.code_version
    counts = lineage.query("SELECT (SELECT count(*) FROM boxes) AS boxes, "
                           "(SELECT count(DISTINCT box_id) FROM boxes) AS ids")
    assert counts.boxes[0] == counts.ids[0] > 100


class BrokenModels(ModelSuiteResource):
    """Plays the shapes roles, but its image generator fails as configured."""

    failure: str = "item"

    def suite(self) -> ModelSuite:
        return BrokenSuite(self.failure)


class BrokenSuite(ModelSuite):
    def __init__(self, failure: str):
        super().__init__()
        self.failure = failure

    def role(self, recipe: str, role: str):
        adapter = super().role(recipe, role)
        return FailingGenerator(adapter, self.failure) if role == "image_generator" else adapter


class FailingGenerator:
    def __init__(self, inner: ShapesImageGenerator, failure: str):
        self.inner, self.failure, self.info, self.calls = inner, failure, inner.info, 0

    def generate(self, prompts, seeds):
        if self.failure == "item" and any("triangle" in p for p in prompts):
            raise ValueError("cannot draw triangles today")
        outputs = self.inner.generate(prompts, seeds)
        self.calls += 1
        if self.failure == "disk" and self.calls == 3:
            raise_on_save = outputs[0].image
            raise_on_save.save = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
        return outputs


def test_a_bad_item_is_skipped_with_its_reason_and_the_rest_published(project_home):
    result = materialize("shapes|00004", models=BrokenModels(failure="item"))
    assert result.success
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    skipped = lineage.query("SELECT item_id, reason FROM skipped_items WHERE stage = 'images'")
    images = ShardStore(default_data_root()).read_table("shapes", "images", "00004")
    assert len(skipped) > 0 and len(images) > 0 and len(skipped) + len(images) == 64
    assert skipped.reason.str.contains("cannot draw triangles today").all()


def test_a_crash_while_writing_a_shard_publishes_nothing(project_home):
    result = materialize("shapes|00005", models=BrokenModels(failure="disk"))
    assert not result.success
    store = ShardStore(default_data_root())
    assert store.has_shard("shapes", "descriptions", "00005")
    assert not store.has_shard("shapes", "images", "00005")
    assert not list((default_data_root() / "shapes" / "images").iterdir())  # no partial or hidden folder


def _materialize_in_child(shard: str) -> bool:
    return materialize(f"shapes|{shard}").success


def test_four_shards_in_parallel_processes_leave_complete_lineage(project_home):
    """Four shards materialized at once in four processes, each publishing its lineage files; one
    refresh indexes them all."""
    # Spawned, not forked: a fork of a process whose torch/OpenMP threads are running can deadlock.
    # The executor's workers leave when told to (no SIGTERM: Dagster's interrupt handler, installed by
    # `materialize` in the worker, defers it, which left a terminated Pool waiting forever).
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        shards = [pool.submit(_materialize_in_child, shard) for shard in ["00000", "00001", "00002", "00003"]]
        assert [shard.result(timeout=600) for shard in shards] == [True] * 4
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    per_shard = lineage.query(
        """SELECT shard, count(DISTINCT item_id) AS n_items, count(*) AS n_rows FROM box_provenance
           GROUP BY shard ORDER BY shard"""
    )
    assert per_shard.shard.tolist() == ["00000", "00001", "00002", "00003"]
    assert (per_shard.n_items == 64).all()
    phrases = lineage.query("SELECT shard, count(*) AS n FROM phrases WHERE kept GROUP BY shard ORDER BY shard")
    assert per_shard.n_rows.tolist() == phrases.n.tolist()  # every kept phrase boxed, none lost or doubled
    runs = lineage.query("SELECT count(DISTINCT run_id) AS n FROM boxes").n[0]
    assert runs == 4
