"""The model suite: recipe -> the models that play its roles, built on first use and cached per process.

A run over many shards builds each adapter once and reuses it for every shard. Before a model is
built, the cached models that hold a GPU (their `device` is a CUDA device) are released
(`release()` frees their GPU memory), so two large models never share one GPU when stages share a
process; CPU adapters stay cached. The suite also owns the grounding models the box stage loads
for its agreement filter.

Tests play other roles by subclassing `ModelSuite` and overriding `role(recipe_name, role)`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Hashable

from synground_assets.recipes import RecipeError, RoleSpec, recipe_book
from synground_assets.roles.base import (
    Describer,
    Detector,
    ImageGenerator,
    PhraseExtractor,
    SourceSampler,
)
from synground_assets.roles.build import build_role

if TYPE_CHECKING:
    from synground_assets.grounding.model import GroundingModel
    from synground_assets.quality.settings import AgreementSettings


class ModelSuite:
    def __init__(self):
        self._cache: dict[Hashable, Any] = {}
        self._lock = threading.RLock()
        self.build_count: dict[Hashable, int] = {}  # builds of each key since the last clear()

    # --- the roles of a recipe ---------------------------------------------------------------

    def concepts(self, recipe_name: str) -> SourceSampler:
        return self.role(recipe_name, "concepts")

    def describer(self, recipe_name: str) -> Describer:
        return self.role(recipe_name, "describer")

    def image_generator(self, recipe_name: str) -> ImageGenerator:
        return self.role(recipe_name, "image_generator")

    def phrase_extractor(self, recipe_name: str) -> PhraseExtractor:
        return self.role(recipe_name, "phrase_extractor")

    def detector(self, recipe_name: str) -> Detector:
        return self.role(recipe_name, "detector")

    def role(self, recipe_name: str, role: str) -> Any:
        """The adapter the recipe names for `role`, built once per process."""
        return self._cached((recipe_name, role), lambda: build_role(role, recipe_book().get(recipe_name).roles[role],
                                                                   recipe=recipe_name))

    # --- grounding models --------------------------------------------------------------------

    def grounding_model(self, recipe_name: str) -> GroundingModel:
        """The recipe's `grounding_model` before fine-tuning (the base a benchmark compares against),
        loaded once per process. For evaluation only: training loads a copy of its own to change."""
        spec = recipe_book().get(recipe_name).grounding_model
        if spec is None:
            raise RecipeError(f"recipe {recipe_name!r} names no grounding_model: add one (adapter blip or albef)")
        from synground_assets.roles.grounding import resolved_spec

        return self._cached((recipe_name, "grounding_model"),
                            lambda: build_role("grounding_model", resolved_spec(spec), recipe=recipe_name))

    def agreement_model(self, recipe_name: str, agreement: AgreementSettings) -> GroundingModel:
        """The agreement filter's judge (its `model`, else the recipe's grounding_model), loaded once
        per process: a run over many shards scores them all with one load."""
        from synground_assets.roles.grounding import load_grounding_model
        from synground_assets.roles.hf_common import resolve_model

        recipe = recipe_book().get(recipe_name)
        base = recipe.grounding_model or RoleSpec(adapter="blip")
        reference = agreement.model or base.model
        if not reference:
            raise RecipeError(f"recipe {recipe_name!r}: quality.agreement needs a model: set quality.agreement.model "
                              "or the recipe's grounding_model")
        revision = None if agreement.model else base.revision
        path = resolve_model(reference, "grounding_model", revision).path
        spec = RoleSpec(adapter=base.adapter, model=path, revision=revision, dtype=base.dtype, device=base.device)
        return self._cached(("agreement", spec.adapter, path, revision, spec.dtype, spec.device),
                            lambda: load_grounding_model(spec))

    # --- the cache ---------------------------------------------------------------------------

    def _cached(self, key: Hashable, build) -> Any:
        with self._lock:
            if key not in self._cache:
                self.release_gpu(keep=key)
                self._cache[key] = build()
                self.build_count[key] = self.build_count.get(key, 0) + 1
            return self._cache[key]

    def release_gpu(self, keep: Hashable | None = None) -> None:
        """Drop the cached models that hold a GPU (all but `keep`), calling their `release()`."""
        with self._lock:
            for key in [k for k in self._cache if k != keep and holds_gpu(self._cache[k])]:
                release(self._cache.pop(key))

    def clear(self) -> None:
        """Forget every cached model (tests; a changed recipe file); GPU ones give their memory back."""
        with self._lock:
            self.release_gpu()
            self._cache.clear()
            self.build_count.clear()


def holds_gpu(model: Any) -> bool:
    return getattr(getattr(model, "device", None), "type", None) == "cuda"


def release(model: Any) -> None:
    """An adapter's own `release()`, else (a grounding model, a torch module) moved off the GPU."""
    if hasattr(model, "release"):
        model.release()
    else:
        import torch

        model.to("cpu")
        torch.cuda.empty_cache()


_SUITE = ModelSuite()


def model_suite() -> ModelSuite:
    """The suite of this process."""
    return _SUITE
