"""Which adapter classes can play which role, by the names used in recipes.

Adapters are named by import path and imported on first use, so a recipe that uses only the shapes
world never imports transformers or diffusers. A factory takes the recipe's `RoleSpec` and returns an
object with the role's interface (`roles/base.py`).
"""

from __future__ import annotations

import importlib
from typing import Any

from synground_assets.recipes import RecipeError, RoleSpec

# (role, adapter name) -> "module:factory". Model-backed adapters add their lines here.
ADAPTERS: dict[tuple[str, str], str] = {
    ("concepts", "shapes"): "synground_assets.roles.shapes:ShapesConceptSampler",
    ("describer", "shapes"): "synground_assets.roles.shapes:ShapesDescriber",
    ("image_generator", "shapes"): "synground_assets.roles.shapes:ShapesImageGenerator",
    ("phrase_extractor", "shapes"): "synground_assets.roles.shapes:ShapesPhraseExtractor",
    ("detector", "shapes"): "synground_assets.roles.shapes:ShapesDetector",
}

# Adapters whose factory takes the whole RoleSpec (model-backed ones); the others take `options` as
# keyword arguments.
SPEC_FACTORIES: set[str] = set()


def build_role(role: str, spec: RoleSpec, recipe: str = "?") -> Any:
    """Instantiate the adapter a recipe names for a role; errors name the recipe and the fix."""
    target = ADAPTERS.get((role, spec.adapter))
    if target is None:
        known = sorted(name for r, name in ADAPTERS if r == role)
        raise RecipeError(
            f"recipe {recipe!r}, role {role!r}: unknown adapter {spec.adapter!r}; expected one of {', '.join(known)}"
        )
    module_name, factory_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    if target in SPEC_FACTORIES:
        return factory(spec)
    try:
        return factory(**spec.options)
    except TypeError as exc:
        raise RecipeError(f"recipe {recipe!r}, role {role!r}, field 'options': {exc}") from exc

# Model-backed adapters (transformers / diffusers, `roles/hf_*.py`) and the real-data source samplers
# (`roles/sources.py`). The hf_* factories take the whole RoleSpec.
ADAPTERS.update({
    ("concepts", "concept-vocabulary"): "synground_assets.roles.sources:ConceptVocabularySampler",
    ("concepts", "image-folder"): "synground_assets.roles.sources:ImageFolderSampler",
    ("concepts", "coco-captions"): "synground_assets.roles.sources:CaptionsSampler",
    ("describer", "image-captioner"): "synground_assets.roles.hf_text:ImageCaptioner",
    ("describer", "llm-concept2text"): "synground_assets.roles.hf_text:ConceptDescriber",
    ("describer", "llm-text2text"): "synground_assets.roles.hf_text:CaptionSummarizer",
    ("describer", "concatenation"): "synground_assets.roles.hf_text:ConcatenationDescriber",
    ("image_generator", "diffusers"): "synground_assets.roles.hf_image:DiffusersImageGenerator",
    ("image_generator", "gligen"): "synground_assets.roles.hf_image:GligenImageGenerator",
    ("phrase_extractor", "llm-phrases"): "synground_assets.roles.hf_text:LLMPhraseExtractor",
    ("detector", "zero-shot-detector"): "synground_assets.roles.hf_detect:ZeroShotDetector",
})
SPEC_FACTORIES.update({
    "synground_assets.roles.hf_text:ImageCaptioner",
    "synground_assets.roles.hf_text:ConceptDescriber",
    "synground_assets.roles.hf_text:CaptionSummarizer",
    "synground_assets.roles.hf_image:DiffusersImageGenerator",
    "synground_assets.roles.hf_image:GligenImageGenerator",
    "synground_assets.roles.hf_text:LLMPhraseExtractor",
    "synground_assets.roles.hf_detect:ZeroShotDetector",
})
