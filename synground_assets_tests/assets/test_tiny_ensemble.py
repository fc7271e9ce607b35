"""The tiny-ensemble recipe through Dagster: two tiny detectors whose boxes are fused and kept where
both agree, then crop verification by a tiny LLaVA with ROVI's question and margin; lineage names
the detectors that proposed each box and every removal says why (quality/ensemble.py, quality/verify.py).

Random weights make arbitrary boxes and probabilities: the test asserts the accounting, which holds
whatever they are, and the recipe (one tiny Grounding DINO at top_k 2 and top_k 1) makes sure both
agreement and disagreement happen: the top-1 box of each phrase is proposed by both settings, the
second box by one only.
"""

from __future__ import annotations

import json

import pytest

from synground_assets.adapters.suite import model_suite
from synground_assets.config.recipes import recipe_book
from synground_assets.resources.lineage import Lineage, default_lineage_path
from synground_assets.resources.store import ShardStore, default_data_root
from synground_assets_tests.assets.test_tiny_recipes import PhrasesFromDescriptions, count_from_pretrained, materialize

RECIPE = "tiny-ensemble"


@pytest.fixture(autouse=True)
def fresh_suite(tiny_models):
    model_suite().clear()
    yield
    model_suite().clear()


def test_two_tiny_detectors_and_crop_verification_through_dagster(project_home, monkeypatch):
    loads = count_from_pretrained(monkeypatch)
    suite = PhrasesFromDescriptions()
    result = materialize(f"{RECIPE}|00000", suite)
    assert result.success
    recipe = recipe_book().get(RECIPE)
    names = [name for name, _ in recipe.detectors()]
    assert names == ["gdino-top2", "gdino-top1"]
    # Each detector built once (one weight load each), the verifier once.
    assert loads["grounding-dino"] == 2 and loads["llava"] == 1

    store = ShardStore(default_data_root())
    kept = store.read_table(RECIPE, "boxes", "00000")
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    proposals = lineage.query("SELECT * FROM box_proposals WHERE recipe = ?", [RECIPE])
    removals = lineage.query("SELECT * FROM removals WHERE recipe = ? AND stage = 'boxes'", [RECIPE])
    verdicts = lineage.query("SELECT * FROM box_verdicts WHERE recipe = ?", [RECIPE])
    assert len(proposals) and set(proposals.detector) == set(names)

    # Agreement: a fused box both detectors proposed goes on; one proposed by one detector is removed,
    # the removal naming that detector.
    per_box = proposals.groupby("box_id").agg(detectors=("detector", lambda d: sorted(d)), agreed=("agreed", "all"))
    agreed = per_box[per_box.agreed]
    assert len(agreed) and all(d == sorted(names) for d in agreed.detectors)
    disagreed = per_box[~per_box.agreed]
    assert len(disagreed), "top_k 2 against top_k 1: the second box of a phrase has one detector only"
    ensemble_removals = removals[removals["filter"] == "ensemble_agreement"].set_index("box_id")
    assert set(ensemble_removals.index) == set(disagreed.index)
    for box, row in ensemble_removals.iterrows():
        (proposer,) = disagreed.detectors[box]
        assert row.detail.startswith(f"proposed by {proposer} only: 1 of 2 detectors")
        assert (row.value, row.threshold) == (1.0, 2.0)

    # Every agreed box is published, or a later filter removed it with its reason; crop verification
    # judged every box that reached it, and its removals carry the measured probabilities.
    later = removals[removals.box_id.isin(agreed.index)].set_index("box_id")
    assert set(kept.box_id) | set(later.index) == set(agreed.index)
    assert not set(kept.box_id) & set(later.index)
    verify_removals = later[later["filter"] == "verify_crop"]
    assert len(verify_removals), "a random-weight VLM says neither yes nor no: ROVI's margin rejects its crops"
    judged = verdicts.set_index("box_id")
    assert set(judged.index) == set(kept.box_id) | set(verify_removals.index)
    for box, row in verify_removals.iterrows():
        verdict = judged.loc[box]
        assert not verdict.kept and row.threshold == pytest.approx(0.2) == verdict.margin
        assert row.value == pytest.approx(verdict.p_yes - verdict.p_no)
        assert f"P(yes) {verdict.p_yes:.4f}, P(no) {verdict.p_no:.4f}" in row.detail
    assert all(judged.loc[box].kept for box in kept.box_id)

    # The boxes lineage names the ensemble; the quality report and the asset metadata show the filters.
    rows = lineage.query("SELECT adapter, settings FROM shard_yields WHERE recipe = ?", [RECIPE])
    assert rows.adapter.tolist() == ["ensemble"]
    settings = json.loads(rows.settings[0])
    assert [d["name"] for d in settings["detectors"]] == names and settings["min_agreeing"] == 2
    report = lineage.query("SELECT filter, removed FROM quality_report WHERE recipe = ? AND stage = 'boxes'", [RECIPE])
    removed = dict(zip(report["filter"], report.removed))
    assert removed["ensemble_agreement"] == len(ensemble_removals)
    assert removed.get("verify_crop", 0) == len(verify_removals)
    (materialization,) = [m for m in result.asset_materializations_for_node("boxes")]
    metadata = materialization.metadata
    assert metadata["removed_by/ensemble_agreement"].value == len(ensemble_removals)
    filters = metadata["box_filters"].value
    assert "2 of 2 detectors agree at IoU >= 0.5" in filters and "P(yes) >= P(no) + 0.2" in filters
