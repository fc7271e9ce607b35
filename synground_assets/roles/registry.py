"""Which adapter classes can play which role, by the names used in recipes.

Adapters are named by import path and imported on first use, so a recipe that uses only the shapes
world never imports transformers or diffusers. A factory takes the recipe's `RoleSpec` and returns an
object with the role's interface (`roles/base.py`).
"""

from __future__ import annotations

import importlib
from typing import Any

from synground_assets.recipes import RecipeError, RoleSpec
from synground_assets.roles.options import Option, option_problems

# (role, adapter name) -> "module:factory". Model-backed adapters add their lines here.
ADAPTERS: dict[tuple[str, str], str] = {
    ("concepts", "shapes"): "synground_assets.roles.shapes:ShapesConceptSampler",
    ("describer", "shapes"): "synground_assets.roles.shapes:ShapesDescriber",
    ("image_generator", "shapes"): "synground_assets.roles.shapes:ShapesImageGenerator",
    ("phrase_extractor", "shapes"): "synground_assets.roles.shapes:ShapesPhraseExtractor",
    ("phrase_extractor", "noun-phrases"): "synground_assets.roles.noun_phrases:NounPhraseExtractor",
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

# --- declared options (name, type, range) of every adapter, checked when a recipe file loads ---

_GENERATION = (
    Option("max_new_tokens", "int", minimum=1), Option("do_sample", "bool"), Option("num_beams", "int", minimum=1),
    Option("temperature", "number", above=0), Option("top_p", "number", above=0, maximum=1),
    Option("top_k", "int", minimum=0), Option("repetition_penalty", "number", above=0),
    Option("no_repeat_ngram_size", "int", minimum=0),
)
_CHAT = _GENERATION + (Option("system", "str"), Option("instruction", "str"), Option("examples", "list"),
                       Option("chat_template", "str"))
_PIPELINE = (
    Option("num_inference_steps", "int", minimum=1), Option("guidance_scale", "number", minimum=0),
    Option("height", "int", minimum=8, multiple_of=8), Option("width", "int", minimum=8, multiple_of=8),
    Option("negative_prompt", "str"),
)
_FRACTION = {"above": 0, "maximum": 1}

ADAPTER_OPTIONS: dict[str, tuple[Option, ...]] = {
    "synground_assets.roles.shapes:ShapesConceptSampler": (
        Option("min_objects", "int", minimum=1, maximum=24), Option("max_objects", "int", minimum=1, maximum=24)),
    "synground_assets.roles.shapes:ShapesDescriber": (Option("relation_probability", "number", minimum=0, maximum=1),),
    "synground_assets.roles.shapes:ShapesImageGenerator": (
        Option("size", "int", minimum=32), Option("min_fraction", "number", **_FRACTION),
        Option("max_fraction", "number", **_FRACTION)),
    "synground_assets.roles.shapes:ShapesPhraseExtractor": (),
    "synground_assets.roles.shapes:ShapesDetector": (
        Option("colour_tolerance", "int", minimum=0, maximum=255), Option("min_area", "int", minimum=1),
        Option("corrupt_fraction", "number", minimum=0, maximum=1), Option("corrupt_seed", "int")),
    "synground_assets.roles.noun_phrases:NounPhraseExtractor": (
        Option("max_words", "int", minimum=1, maximum=16), Option("max_phrases", "int", minimum=1)),
    "synground_assets.roles.sources:ConceptVocabularySampler": (
        Option("vocabulary", "str"), Option("attributes", "str"), Option("min_concepts", "int", minimum=1),
        Option("max_concepts", "int", minimum=1), Option("attribute_probability", "number", minimum=0, maximum=1)),
    "synground_assets.roles.sources:ImageFolderSampler": (Option("images", "str", required=True),
                                                          Option("image_root", "str")),
    "synground_assets.roles.sources:CaptionsSampler": (
        Option("captions", "str", required=True), Option("image_root", "str"), Option("max_captions", "int", minimum=1)),
    "synground_assets.roles.hf_text:ImageCaptioner": _GENERATION + (Option("prompt", "str"),),
    "synground_assets.roles.hf_text:ConceptDescriber": _CHAT,
    "synground_assets.roles.hf_text:CaptionSummarizer": _CHAT,
    "synground_assets.roles.hf_text:ConcatenationDescriber": (Option("separator", "str"),
                                                              Option("max_captions", "int", minimum=1)),
    "synground_assets.roles.hf_image:DiffusersImageGenerator": _PIPELINE,
    "synground_assets.roles.hf_image:GligenImageGenerator": _PIPELINE + (
        Option("max_objects", "int", minimum=1), Option("box_min_fraction", "number", **_FRACTION),
        Option("box_max_fraction", "number", **_FRACTION),
        Option("scheduled_sampling_beta", "number", minimum=0, maximum=1),
        Option("layout_phrase_model", "str"), Option("layout_chat_template", "str")),
    "synground_assets.roles.hf_text:LLMPhraseExtractor": _CHAT + (Option("max_words", "int", minimum=1),),
    "synground_assets.roles.hf_detect:ZeroShotDetector": (
        Option("box_threshold", "number", minimum=0, maximum=1), Option("text_threshold", "number", minimum=0, maximum=1),
        Option("top_k", "int", minimum=1)),
}
# The grounding model (`grounding_model:` of a recipe) is loaded by `roles/grounding_blip.py`.
_GROUNDING_MODEL_OPTIONS = (Option("gradcam_layer", "int", minimum=0), Option("max_text_tokens", "int", minimum=2))
GROUNDING_OPTIONS: dict[str, tuple[Option, ...]] = {"blip": _GROUNDING_MODEL_OPTIONS, "albef": _GROUNDING_MODEL_OPTIONS}


def role_problems(role: str, spec: RoleSpec) -> list[str]:
    """What is wrong with one role of a recipe, as 'option ...: expected ..., got ...' phrases;
    nothing is imported or loaded."""
    if role == "grounding_model":
        declared = GROUNDING_OPTIONS.get(spec.adapter)
        known, needs_model = sorted(GROUNDING_OPTIONS), True
    else:
        target = ADAPTERS.get((role, spec.adapter))
        declared = ADAPTER_OPTIONS.get(target) if target else None
        known, needs_model = sorted(name for r, name in ADAPTERS if r == role), target in SPEC_FACTORIES
    if declared is None:
        return [f"field 'adapter': expected one of {', '.join(known)}, got {spec.adapter!r}"]
    problems = option_problems(spec.options, declared)
    if needs_model and not spec.model:
        problems.append("field 'model': expected a hub id, a local folder or tiny:<name>, got nothing")
    return problems
