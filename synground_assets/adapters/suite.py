"""The model suite: recipe -> the models that play its roles, built on first use and cached per process.

A run over many shards builds each adapter once and reuses it for every shard. Before a model is
built, the cached models that hold a GPU (their `device` is a CUDA device) are released
(`release()` frees their GPU memory), so two large models never share one GPU when stages share a
process; CPU adapters stay cached. The suite also owns the grounding models the box stage loads
for its agreement filter.

The box stage's models (every detector of an ensemble, the agreement judge, the crop verifier) form
one group: building one of them releases GPU models of other stages only, so a run over many
shards loads each of them once, and they share the GPU while the stage runs.

Tests play other roles by subclassing `ModelSuite` and overriding `role(recipe_name, role)`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable

from synground_assets.adapters.build import build_role
from synground_assets.config.recipes import Recipe, RecipeError, RoleSpec, recipe_book
from synground_assets.roles.base import (
    Describer,
    Detector,
    ImageGenerator,
    PhraseExtractor,
    SourceSampler,
)

if TYPE_CHECKING:
    from synground_assets.grounding.model import GroundingModel
    from synground_assets.quality.settings import AgreementSettings, VerifySettings


class ModelSuite:
    def __init__(self):
        self._cache: dict[Hashable, Any] = {}
        self._lock = threading.RLock()
        self.build_count: dict[Hashable, int] = {}  # builds of each key since the last clear()
        self._groups: dict[Hashable, Hashable] = {}  # key -> its group: models of one group never release each other

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

    def detectors(self, recipe: Recipe | str) -> list[tuple[str, Detector]]:
        """(name, detector) of every detector of the box stage, each built once per process. One
        detector is `detector(...)`; an ensemble's first is cached under the same key, the others
        under (recipe, "detector", name); they are one group (see the module docstring)."""
        recipe = recipe_book().get(recipe) if isinstance(recipe, str) else recipe
        if not recipe.ensemble:
            return [("detector", self.detector(recipe.name))]
        built = []
        for position, (name, spec) in enumerate(recipe.ensemble):
            key = (recipe.name, "detector") if position == 0 else (recipe.name, "detector", name)
            built.append((name, self._cached(key, lambda spec=spec: build_role("detector", spec, recipe=recipe.name),
                                             group=(recipe.name, "boxes"))))
        return built

    def role(self, recipe_name: str, role: str) -> Any:
        """The adapter the recipe names for `role`, built once per process."""
        return self._cached((recipe_name, role), lambda: build_role(role, recipe_book().get(recipe_name).roles[role],
                                                                   recipe=recipe_name),
                            group=(recipe_name, "boxes") if role == "detector" else None)

    # --- grounding models --------------------------------------------------------------------

    def grounding_model(self, recipe_name: str) -> GroundingModel:
        """The recipe's `grounding_model` before fine-tuning (the base a benchmark compares against),
        loaded once per process. For evaluation only: training loads a copy of its own to change."""
        spec = recipe_book().get(recipe_name).grounding_model
        if spec is None:
            raise RecipeError(f"recipe {recipe_name!r} names no grounding_model: add one (adapter blip or albef)")
        from synground_assets.adapters.grounding import resolved_spec

        return self._cached((recipe_name, "grounding_model"),
                            lambda: build_role("grounding_model", resolved_spec(spec), recipe=recipe_name))

    def load_grounding_model(self, model: RoleSpec | str | os.PathLike, device: str | None = None,
                             remake: str | None = None) -> GroundingModel:
        """A grounding model of its own, not cached: the copy training changes, a published checkpoint
        read once. `model`: a spec (its catalog row's adapter) or a hub id / folder (the folder's
        format picks the adapter); `remake` names what makes a broken folder again."""
        from synground_assets.adapters.grounding import load_grounding_model

        return load_grounding_model(model, device=device, remake=remake)

    def agreement_model(self, recipe_name: str, agreement: AgreementSettings) -> GroundingModel:
        """The agreement filter's judge (its `model`, else the recipe's grounding_model), loaded once
        per process: a run over many shards scores them all with one load."""
        from synground_assets.adapters.grounding import load_grounding_model
        from synground_assets.adapters.hf_common import resolve_model

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
                            lambda: load_grounding_model(spec), group=(recipe_name, "boxes"))

    def verifier(self, recipe_name: str, verify: VerifySettings):
        """The crop verifier of `quality.verify`: a VLM (judge vlm) or the ITM head of a grounding model
        (judge itm: its `model`, else the recipe's grounding_model), loaded once per process."""
        from synground_assets.adapters.verifier import ItmVerifier

        if verify.judge == "itm":
            agreement = _ItmJudge(verify.model)
            return self._cached(("verifier", "itm", verify.model or recipe_name),
                                lambda: ItmVerifier(self.agreement_model(recipe_name, agreement)),
                                group=(recipe_name, "boxes"))
        spec = RoleSpec(adapter="vlm", model=verify.model, dtype=verify.dtype, device=verify.device,
                        batch_size=verify.batch_size)
        return self._cached(("verifier", "vlm", verify.model, verify.question, verify.dtype, verify.device),
                            lambda: _vlm_verifier(spec, verify.question), group=(recipe_name, "boxes"))

    # --- the cache ---------------------------------------------------------------------------

    def _cached(self, key: Hashable, build, group: Hashable | None = None) -> Any:
        with self._lock:
            if key not in self._cache:
                self.release_gpu(keep=key, group=group)
                self._cache[key] = build()
                self._groups[key] = group
                self.build_count[key] = self.build_count.get(key, 0) + 1
            return self._cache[key]

    def release_gpu(self, keep: Hashable | None = None, group: Hashable | None = None) -> None:
        """Drop the cached models that hold a GPU (all but `keep` and the models of `group`), calling
        their `release()`."""
        with self._lock:
            for key in [k for k in self._cache if k != keep and holds_gpu(self._cache[k])
                        and (group is None or self._groups.get(k) != group)]:
                release(self._cache.pop(key))
                self._groups.pop(key, None)

    def clear(self) -> None:
        """Forget every cached model (tests; a changed recipe file); GPU ones give their memory back."""
        with self._lock:
            self.release_gpu()
            self._cache.clear()
            self._groups.clear()
            self.build_count.clear()


@dataclass(frozen=True)
class _ItmJudge:
    """What `agreement_model` reads of its settings (the model), for the ITM verifier."""

    model: str | None


def _vlm_verifier(spec: RoleSpec, question: str):
    from synground_assets.adapters.verifier import VLMVerifier

    return VLMVerifier(spec, question)


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
