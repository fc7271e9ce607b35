"""Issue 11, item 9: the tiny detector recipes carry phrases to the detector with their own roles
(the rule-based noun-phrase extractor), no test-only extractor swapped in."""

from __future__ import annotations

import dagster as dg
import pytest

from synground_assets.adapters.suite import model_suite
from synground_assets.config.recipes import recipe_book
from synground_assets.definitions import GENERATION_ASSETS
from synground_assets.resources import (
    LineageResource,
    ModelSuiteResource,
    StoreResource,
)
from synground_assets.resources.lineage import refreshed_lineage
from synground_assets.resources.store import ShardStore, default_data_root


@pytest.fixture(scope="module", autouse=True)
def tiny_model_cache(tiny_models):
    model_suite().clear()
    yield tiny_models
    model_suite().clear()


@pytest.mark.parametrize("recipe", ["tiny-concept2text", "tiny-image2text"])
def test_phrases_of_a_tiny_recipe_reach_its_detector(project_home, recipe):
    assert recipe_book().get(recipe).roles["phrase_extractor"].adapter == "noun-phrases"
    result = dg.materialize(GENERATION_ASSETS, partition_key=f"{recipe}|00000", instance=dg.DagsterInstance.ephemeral(),
                            resources={"store": StoreResource(), "lineage": LineageResource(),
                                       "suite": ModelSuiteResource()})
    assert result.success
    store = ShardStore(default_data_root())
    descriptions = store.read_table(recipe, "descriptions", "00000").set_index("item_id").description
    phrases = store.read_table(recipe, "phrases", "00000")
    kept = phrases[phrases.kept]
    # Every item's description (random-weight text) yields at least one kept phrase, copied from it.
    assert set(kept.item_id) == set(descriptions.index)
    assert all(p.lower() in descriptions[i].lower() for i, p in zip(kept.item_id, kept.phrase))
    # The boxes step ran the detector over those phrases (its yield row counts them).
    (boxes_step,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("boxes")]
    metadata = boxes_step.materialization.metadata
    assert metadata["phrases"].value == len(kept) > 0
    yields = refreshed_lineage().query("SELECT phrases, adapter FROM shard_yields WHERE recipe = ?", [recipe])
    assert yields.phrases.tolist() == [len(kept)] and yields.adapter.tolist() == ["zero-shot-detector"]
