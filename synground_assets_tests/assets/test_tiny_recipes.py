"""The tiny-* recipes through Dagster: every model-backed role loaded with `from_pretrained` from a
tiny random-weight model of the real class, on the CPU, one shard end to end.

Random weights write arbitrary text, so the tiny phrase extractor rarely finds a phrase that occurs
in its description: the end-to-end test asserts what holds whatever the text is, and the boxes test
gives the real tiny detectors (and the GLIGEN layout) phrases read off the descriptions.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from PIL import Image

from synground_assets.adapters.hf_image import article_phrases
from synground_assets.adapters.suite import ModelSuite, model_suite
from synground_assets.config.recipes import BUILTIN_RECIPES, _cached_book, recipe_book
from synground_assets.definitions import GENERATION_ASSETS, defs
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.lineage import Lineage, default_lineage_path
from synground_assets.resources.store import ShardStore, default_data_root
from synground_assets.roles.base import AdapterInfo, PhraseCandidates

TINY_RECIPES = ["tiny-image2text", "tiny-concept2text", "tiny-text2text", "tiny-gligen", "tiny-glip"]
MODEL_STAGES = {"descriptions": "describer", "images": "image_generator", "phrases": "phrase_extractor",
                "boxes": "detector"}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture(scope="module", autouse=True)
def tiny_model_cache(tiny_models):
    """The session's tiny models, with the model suite's cache cleared around this module."""
    model_suite().clear()
    yield tiny_models
    model_suite().clear()


def materialize(partition_key: str, suite: ModelSuiteResource | None = None, assets=GENERATION_ASSETS):
    return dg.materialize(
        assets,
        partition_key=partition_key,
        instance=dg.DagsterInstance.ephemeral(),
        resources={"store": StoreResource(), "lineage": LineageResource(), "suite": suite or ModelSuiteResource()},
        raise_on_error=False,
    )


def generator_size(model_folder: Path) -> tuple[int, int]:
    """The (width, height) a diffusers pipeline draws by default: UNet sample size x VAE scale."""
    unet = json.loads((model_folder / "unet" / "config.json").read_text())
    vae = json.loads((model_folder / "vae" / "config.json").read_text())
    side = unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    return side, side


def boxes_with_sizes(store: ShardStore, recipe: str) -> pd.DataFrame:
    boxes = store.read_table(recipe, "boxes", "00000").astype({"phrase_id": str, "item_id": str})
    phrases = store.read_table(recipe, "phrases", "00000")[["phrase_id", "phrase", "kept"]].astype({"phrase_id": str})
    sizes = store.read_table(recipe, "images", "00000")[["item_id", "width", "height"]]
    return boxes.merge(phrases, on="phrase_id", how="left").merge(sizes, on="item_id", how="left")


def assert_in_bounds(boxes: pd.DataFrame) -> None:
    assert ((boxes.x0 >= 0) & (boxes.x0 < boxes.x1) & (boxes.x1 <= boxes.width)).all()
    assert ((boxes.y0 >= 0) & (boxes.y0 < boxes.y1) & (boxes.y1 <= boxes.height)).all()


class DescriptionPhrases:
    """A phrase extractor that reads phrases off the description: its article-led noun phrases
    (GLIGEN's layout rule), else its first words. Every phrase occurs in its description."""

    info = AdapterInfo("description-phrases", "rule")

    def extract(self, texts):
        return [PhraseCandidates(tuple(article_phrases(text) or text.split()[:3])) for text in texts]


class PhrasesFromDescriptionsSuite(ModelSuite):
    def role(self, recipe: str, role: str):
        return DescriptionPhrases() if role == "phrase_extractor" else super().role(recipe, role)


class PhrasesFromDescriptions(ModelSuiteResource):
    def suite(self) -> ModelSuite:
        return PhrasesFromDescriptionsSuite()


def recipes_with(tmp_path: Path, monkeypatch, recipe: str, role: str, **changes) -> None:
    """Point SYNGROUND_RECIPES at a copy of the built-in book with one role of one recipe changed
    (recipe names stay: the partitions were fixed when the code location was imported)."""
    book = yaml.safe_load(Path(BUILTIN_RECIPES).read_text())
    book["recipes"][recipe]["roles"][role].update(changes)
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    monkeypatch.setenv("SYNGROUND_RECIPES", str(path))
    _cached_book.cache_clear()
    model_suite().clear()


@pytest.fixture
def restore_recipes():
    yield
    _cached_book.cache_clear()
    model_suite().clear()


def failure_message(result: dg.ExecuteInProcessResult, step: str) -> str:
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == step
    return str(failure.step_failure_data.error)


def count_from_pretrained(monkeypatch) -> Counter:
    """Count the weight loads (transformers models, diffusers pipelines) by model folder."""
    import diffusers
    import transformers

    loads: Counter = Counter()
    for owner in (transformers.PreTrainedModel, diffusers.DiffusionPipeline):
        original = owner.from_pretrained.__func__

        def counting(cls, path, *args, _original=original, **kwargs):
            loads[Path(str(path)).name] += 1
            return _original(cls, path, *args, **kwargs)

        monkeypatch.setattr(owner, "from_pretrained", classmethod(counting))
    return loads


def run_shard_range(recipe: str, first: str, last: str) -> dg.ExecuteInProcessResult:
    """What `dagster asset materialize --partition-range 'first...last'` runs: one run over the range."""
    return defs.resolve_job_def("generation").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        tags={RANGE_START: f"{recipe}|{first}", RANGE_END: f"{recipe}|{last}"},
        raise_on_error=False,
    )


@pytest.mark.parametrize("recipe", TINY_RECIPES)
def test_a_tiny_recipe_materializes_one_shard_end_to_end(project_home, tiny_models, recipe):
    result = materialize(f"{recipe}|00000")
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    spec = recipe_book().get(recipe)
    store = ShardStore(default_data_root())
    for stage in ["concepts", "descriptions", "images", "phrases", "boxes"]:
        assert store.has_shard(recipe, stage, "00000"), stage

    # Images: one PNG per description, of the size the generator's model config gives.
    descriptions = store.read_table(recipe, "descriptions", "00000")
    images = store.read_table(recipe, "images", "00000")
    assert len(descriptions) == spec.shard_size and descriptions.description.str.strip().str.len().gt(0).all()
    assert images.item_id.tolist() == descriptions.item_id.tolist()
    size = generator_size(tiny_models[spec.roles["image_generator"].model.removeprefix("tiny:")])
    for row in images.itertuples():
        with Image.open(store.shard_dir(recipe, "images", "00000") / row.file) as picture:
            assert picture.format == "PNG" and picture.size == size == (row.width, row.height)

    # Phrases: the table is there; a kept phrase occurs in its description, a dropped one says why.
    phrases = store.read_table(recipe, "phrases", "00000").merge(descriptions, on="item_id")
    assert {"phrase_id", "item_id", "phrase", "phrase_index", "kept", "drop_reason"} <= set(phrases.columns)
    for row in phrases.itertuples():
        assert (row.phrase.lower() in row.description.lower()) if row.kept else bool(row.drop_reason)

    # Boxes: only for kept phrases, inside their image.
    boxes = boxes_with_sizes(store, recipe)
    assert boxes.kept.fillna(False).all()
    assert_in_bounds(boxes)

    # Lineage: every stage's rows name the recipe's model for its role, on the CPU.
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    for stage, role in MODEL_STAGES.items():
        if spec.roles[role].model is None:  # the concatenation describer has no model
            continue
        rows = lineage.query(f"SELECT DISTINCT adapter, model_id, settings FROM {stage} WHERE recipe = ?", [recipe])
        if stage in ("phrases", "boxes") and rows.empty:
            continue  # no phrase (or box) this time: nothing to record
        assert len(rows) == 1, stage
        assert (rows.adapter[0], rows.model_id[0]) == (spec.roles[role].adapter, spec.roles[role].model)
        assert json.loads(rows.settings[0])["device"] == "cpu"
    image_rows = lineage.query("SELECT width, height, settings FROM images WHERE recipe = ?", [recipe])
    assert len(image_rows) == spec.shard_size
    assert {(json.loads(s)["width"], json.loads(s)["height"]) for s in image_rows.settings} == {size}
    shard_yield = lineage.query("SELECT phrases, phrases_with_box, boxes FROM shard_yields WHERE recipe = ?", [recipe])
    assert shard_yield.iloc[0].tolist() == [int(phrases.kept.sum()), boxes.phrase_id.nunique(), len(boxes)]


@pytest.mark.parametrize("recipe", TINY_RECIPES)
def test_boxes_of_a_tiny_recipe_lie_in_their_image_and_gligen_boxes_are_its_layout(project_home, monkeypatch,
                                                                                   restore_recipes, recipe):
    # Thresholds 0: a random detector's best box for a phrase is kept (one per phrase, top_k 1).
    # GLIP has no text threshold (a box's score is its phrase's); its own min_size keeps it fast.
    glip = recipe_book().get(recipe).roles["detector"].adapter == "glip"
    options = {"box_threshold": 0.0, "min_size": 128} if glip else {"box_threshold": 0.0, "text_threshold": 0.0}
    recipes_with(project_home, monkeypatch, recipe, "detector", options=options)
    assert materialize(f"{recipe}|00000", PhrasesFromDescriptions()).success
    spec = recipe_book().get(recipe)
    store = ShardStore(default_data_root())
    phrases = store.read_table(recipe, "phrases", "00000")
    assert phrases.kept.sum() >= spec.shard_size  # at least one phrase per item
    boxes = boxes_with_sizes(store, recipe)
    assert len(boxes) > 0 and boxes.kept.all()
    assert_in_bounds(boxes)
    assert boxes.phrase_id.is_unique and (boxes.box_rank == 0).all()
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    provenance = lineage.query("SELECT * FROM box_provenance WHERE recipe = ?", [recipe])
    assert sorted(provenance.box_id) == sorted(boxes.box_id)
    assert set(provenance.generator_model) == {spec.roles["image_generator"].model}
    if spec.box_source == "gligen":
        # Each box is the layout box its phrase was drawn in, with score 1; a phrase not in the
        # layout has none.
        layout = store.read_table(recipe, "images", "00000", "layout.parquet")
        layout = layout.assign(key=layout.phrase.str.lower())
        matched = boxes.assign(key=boxes.phrase.str.lower()).merge(layout, on=["item_id", "key"],
                                                                   suffixes=("", "_layout"))
        assert len(matched) == len(boxes) and (matched.score == 1.0).all()
        for corner in ["x0", "y0", "x1", "y1"]:
            assert (matched[corner] == matched[f"{corner}_layout"]).all()
        kept = phrases[phrases.kept].assign(key=lambda t: t.phrase.str.lower())
        in_layout = kept.merge(layout, on=["item_id", "key"])
        assert set(boxes.phrase_id) == set(in_layout.phrase_id) and len(kept) > len(in_layout)
    else:
        assert set(provenance.detector_model) == {spec.roles["detector"].model}
        assert (boxes.score > 0).all() and (boxes.score <= 1).all()


def test_a_run_over_a_range_of_shards_loads_each_model_once(project_home, monkeypatch):
    recipe = "tiny-concept2text"
    loads = count_from_pretrained(monkeypatch)
    model_suite().clear()
    result = run_shard_range(recipe, "00000", "00002")
    assert result.success
    store = ShardStore(default_data_root())
    for stage in ["concepts", "descriptions", "images", "phrases", "boxes"]:
        assert store.shards(recipe, stage) == ["00000", "00001", "00002"]
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    for stage in ["concept_sets", "descriptions", "images", "shard_yields"]:  # rows for every shard
        runs = lineage.query(f"SELECT DISTINCT shard, run_id FROM {stage} ORDER BY shard")
        assert runs.shard.tolist() == ["00000", "00001", "00002"] and set(runs.run_id) == {result.run_id}
    # Each role built once for the three shards, and every weight file loaded once per role: the
    # causal LM by the describer (phrases come from the rule-based chunker), the Stable Diffusion
    # pipeline (its CLIP text encoder through transformers) and OWLv2 once.
    assert model_suite().build_count == {(recipe, role): 1 for role in recipe_book().get(recipe).roles}
    assert loads == {"causal-lm": 1, "stable-diffusion": 1, "text_encoder": 1, "owlv2": 1}


@pytest.mark.parametrize(
    "model, expected",
    [
        ("{home}/models/no-such-detector",
         "role 'detector': model folder '{home}/models/no-such-detector' does not exist"),
        ("tiny:causal-lm", "is a 'llama', which this adapter cannot run; expected one of grounding-dino, "
                           "mm-grounding-dino, omdet-turbo, owlv2, owlvit"),
    ],
    ids=["missing-folder", "unknown-architecture"],
)
def test_a_detector_that_cannot_load_fails_the_boxes_step_before_any_item(project_home, monkeypatch, restore_recipes,
                                                                          model, expected):
    recipe = "tiny-concept2text"
    recipes_with(project_home, monkeypatch, recipe, "detector", model=model.format(home=project_home))
    result = materialize(f"{recipe}|00000")
    assert not result.success
    message = failure_message(result, "boxes")
    assert "ModelLoadError" in message and expected.format(home=project_home) in message
    store = ShardStore(default_data_root())
    assert store.has_shard(recipe, "phrases", "00000")
    assert not store.has_shard(recipe, "boxes", "00000")
    assert not list((default_data_root() / recipe).glob("boxes/*"))  # no shard, no temporary folder left
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    assert lineage.query("SELECT count(*) AS n FROM skipped_items WHERE stage = 'boxes'").n[0] == 0


def test_device_cuda_without_a_gpu_fails_the_step_that_asks_for_it(project_home, monkeypatch, restore_recipes):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    recipe = "tiny-concept2text"
    recipes_with(project_home, monkeypatch, recipe, "describer", device="cuda")
    result = materialize(f"{recipe}|00000")
    assert not result.success
    assert "device 'cuda' was asked for but no CUDA GPU is available" in failure_message(result, "descriptions")
    store = ShardStore(default_data_root())
    assert store.has_shard(recipe, "concepts", "00000") and not store.has_shard(recipe, "descriptions", "00000")


def test_learning_assets_take_a_gpu_pool_slot_and_generation_runs_are_limited_by_their_recipe_tag():
    graph = defs.resolve_asset_graph()
    pools = {key.path[-1]: graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert {name for name, pool in pools.items() if pool == {"gpu"}} == {"finetuned_checkpoint", "benchmark_scores"}
    assert all(not pools[name] for name in ["concepts", "descriptions", "images", "phrases", "boxes", "exports"])
