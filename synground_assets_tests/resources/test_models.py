"""The model suite: one build per (recipe, role) per process, GPU adapters released between stages."""

import pytest
import torch

from synground_assets.roles import suite
from synground_assets.roles.suite import model_suite


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


def test_the_grounding_model_is_built_from_the_catalog_once_per_process(tiny_models):
    from synground_assets.roles.grounding_blip import BlipGroundingModel

    model_suite().clear()
    try:
        base = model_suite().grounding_model("shapes")
        assert isinstance(base, BlipGroundingModel)
        assert model_suite().grounding_model("shapes") is base
        assert model_suite().build_count == {("shapes", "grounding_model"): 1}
    finally:
        model_suite().clear()


def test_a_recipe_without_a_grounding_model_is_named():
    from synground_assets.recipes import RecipeError

    with pytest.raises(RecipeError, match="recipe 'tiny-concept2text' names no grounding_model"):
        model_suite().grounding_model("tiny-concept2text")
