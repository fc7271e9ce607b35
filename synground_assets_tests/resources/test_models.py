"""The model suite: one build per (recipe, role) per process, GPU adapters released between stages."""

import pytest
import torch

from synground_assets.adapters import suite
from synground_assets.adapters.suite import model_suite


class FakeAdapter:
    def __init__(self, role: str, device: str, released: list):
        self.role, self.device, self.released = role, torch.device(device), released

    def release(self):
        self.released.append(self.role)


def test_a_gpu_adapter_is_released_before_the_next_stage_builds_its_model(monkeypatch):
    """When stages share a process, a GPU model is let go before the next stage loads its own;
    CPU adapters stay cached."""
    released = []
    monkeypatch.setattr(suite, "build_role", lambda role, spec, recipe: FakeAdapter(
        role, "cpu" if role == "concepts" else "cuda", released))
    model_suite().clear()
    try:
        concepts = model_suite().role("tiny-concept2text", "concepts")
        model_suite().role("tiny-concept2text", "describer")
        assert released == []
        model_suite().role("tiny-concept2text", "image_generator")
        assert released == ["describer"]
        model_suite().role("tiny-concept2text", "image_generator")  # cached: nothing built or released
        assert released == ["describer"]
        assert model_suite().role("tiny-concept2text", "concepts") is concepts
        assert model_suite().build_count == {("tiny-concept2text", role): 1
                                      for role in ["concepts", "describer", "image_generator"]}
        model_suite().clear()
        assert released == ["describer", "image_generator"] and model_suite().build_count == {}
    finally:
        model_suite().clear()


class NamedFake(FakeAdapter):
    """A GPU adapter named by its spec (the detectors of an ensemble share one role)."""

    def __init__(self, spec, released: list):
        super().__init__(spec.options.get("top_k", spec.adapter), "cuda", released)


def test_the_detectors_of_an_ensemble_stay_loaded_together_and_load_once(monkeypatch):
    """Loading the second detector of an ensemble does not release the first (they run on each
    batch in turn); the next stage's model releases both; a second shard builds nothing."""
    released = []
    monkeypatch.setattr(suite, "build_role", lambda role, spec, recipe: (
        NamedFake(spec, released) if role == "detector" else FakeAdapter(role, "cuda", released)))
    model_suite().clear()
    try:
        model_suite().role("tiny-ensemble", "describer")
        detectors = model_suite().detectors("tiny-ensemble")
        assert [name for name, _ in detectors] == ["gdino-top2", "gdino-top1"]
        assert released == ["describer"]  # the other stage's model, not a detector
        assert [d for _, d in model_suite().detectors("tiny-ensemble")] == [d for _, d in detectors]  # next shard
        assert model_suite().build_count == {("tiny-ensemble", "describer"): 1, ("tiny-ensemble", "detector"): 1,
                                             ("tiny-ensemble", "detector", "gdino-top1"): 1}
        model_suite().role("tiny-ensemble", "image_generator")
        assert len(released) == 3 and set(released) == {"describer", 2, 1}  # both detectors released
    finally:
        model_suite().clear()


def test_the_grounding_model_is_built_from_the_catalog_once_per_process(tiny_models):
    from synground_assets.adapters.grounding_blip import BlipGroundingModel

    model_suite().clear()
    try:
        base = model_suite().grounding_model("shapes")
        assert isinstance(base, BlipGroundingModel)
        assert model_suite().grounding_model("shapes") is base
        assert model_suite().build_count == {("shapes", "grounding_model"): 1}
    finally:
        model_suite().clear()


def test_a_recipe_without_a_grounding_model_is_named():
    from synground_assets.config.recipes import RecipeError

    with pytest.raises(RecipeError, match="recipe 'tiny-concept2text' names no grounding_model"):
        model_suite().grounding_model("tiny-concept2text")
