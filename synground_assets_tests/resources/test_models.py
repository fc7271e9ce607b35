"""The model suite: one build per (recipe, role) per process, GPU adapters released between stages."""

import torch

from synground_assets.resources import models


class FakeAdapter:
    def __init__(self, role: str, device: str, released: list):
        self.role, self.device, self.released = role, torch.device(device), released

    def release(self):
        self.released.append(self.role)


def test_a_gpu_adapter_is_released_before_the_next_stage_builds_its_model(monkeypatch):
    """When stages share a process, a GPU model is let go before the next stage loads its own;
    CPU adapters stay cached."""
    released = []
    monkeypatch.setattr(models, "build_role", lambda role, spec, recipe: FakeAdapter(
        role, "cpu" if role == "concepts" else "cuda", released))
    models.clear()
    try:
        concepts = models.get_role("tiny-concept2text", "concepts")
        models.get_role("tiny-concept2text", "describer")
        assert released == []
        models.get_role("tiny-concept2text", "image_generator")
        assert released == ["describer"]
        models.get_role("tiny-concept2text", "image_generator")  # cached: nothing built or released
        assert released == ["describer"]
        assert models.get_role("tiny-concept2text", "concepts") is concepts
        assert models.BUILD_COUNT == {("tiny-concept2text", role): 1
                                      for role in ["concepts", "describer", "image_generator"]}
        models.clear()
        assert released == ["describer", "image_generator"] and models.BUILD_COUNT == {}
    finally:
        models.clear()
