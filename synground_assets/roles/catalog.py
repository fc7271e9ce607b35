"""The catalog: every adapter a recipe can name, the role it plays, where its class lives and the
options it takes (name, type, range). One table, read by two sides:

- recipe validation (`recipes._check_adapters`, through `role_problems`) when the recipe file loads,
  so a typo or a bad value fails `dagster definitions validate` naming the file, recipe, role,
  option and the expected value, before any asset runs. This module imports no torch,
  transformers or diffusers: validating a recipe stays cheap.
- the adapters themselves (`options_problems`), so an adapter built directly, outside a recipe, checks
  the same options the same way.

Adapters are named by import path and imported on first use (`adapters/build.py`), so a recipe that
uses only the shapes world never imports a model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from synground_assets.roles.options import Option, option_problems


@dataclass(frozen=True)
class AdapterEntry:
    role: str  # one of base.ROLE_NAMES, or "grounding_model"
    name: str  # as a recipe writes it: `adapter: <name>`
    factory: str  # "module:attribute", imported on first use
    options: tuple[Option, ...]
    # Model-backed adapters take the whole RoleSpec (model, dtype, device, batch size) and need a
    # `model:`; the others take their `options` as keyword arguments.
    takes_spec: bool = False


# --- option groups shared by several adapters ---------------------------------------------------

_FRACTION = {"above": 0, "maximum": 1}
_GENERATION = (
    Option("max_new_tokens", "int", minimum=1), Option("do_sample", "bool"), Option("num_beams", "int", minimum=1),
    Option("temperature", "number", above=0), Option("top_p", "number", above=0, maximum=1),
    Option("top_k", "int", minimum=0), Option("repetition_penalty", "number", above=0),
    Option("no_repeat_ngram_size", "int", minimum=0),
)
GENERATION_OPTIONS = tuple(option.name for option in _GENERATION)  # what `generate()` is given
# A causal LM with a chat template; `gguf_file` names a GGUF checkpoint (llama.cpp's format) in the model
# folder or hub repository, loaded by transformers (needs the gguf and accelerate packages).
_CHAT = _GENERATION + (Option("system", "str"), Option("instruction", "str"), Option("examples", "list"),
                       Option("chat_template", "str"), Option("gguf_file", "str"))
_PIPELINE = (
    Option("num_inference_steps", "int", minimum=1), Option("guidance_scale", "number", minimum=0),
    Option("height", "int", minimum=8, multiple_of=8), Option("width", "int", minimum=8, multiple_of=8),
    Option("negative_prompt", "str"),
)
_DETECTOR = (Option("box_threshold", "number", minimum=0, maximum=1),
             Option("text_threshold", "number", minimum=0, maximum=1), Option("top_k", "int", minimum=1))
# GLIP's demo keeps score > box_threshold (no text threshold: a box's score is already its phrase's);
# min_size: the shorter side the image is resized to (adapters/glip_detect.py).
_GLIP = (Option("box_threshold", "number", minimum=0, maximum=1), Option("top_k", "int", minimum=1),
         Option("min_size", "int", minimum=32))
_GROUNDING_MODEL = (Option("gradcam_layer", "int", minimum=0), Option("max_text_tokens", "int", minimum=2))

_SHAPES = "synground_assets.tiny.shapes"
_SOURCES = "synground_assets.adapters.sources"
_TEXT = "synground_assets.adapters.hf_text"
_IMAGE = "synground_assets.adapters.hf_image"
_DETECT = "synground_assets.adapters.hf_detect"

CATALOG: tuple[AdapterEntry, ...] = (
    # The procedural shapes world (CPU, no model).
    AdapterEntry("concepts", "shapes", f"{_SHAPES}:ShapesConceptSampler", (
        Option("min_objects", "int", minimum=1, maximum=24), Option("max_objects", "int", minimum=1, maximum=24))),
    AdapterEntry("describer", "shapes", f"{_SHAPES}:ShapesDescriber",
                 (Option("relation_probability", "number", minimum=0, maximum=1),)),
    AdapterEntry("image_generator", "shapes", f"{_SHAPES}:ShapesImageGenerator", (
        Option("size", "int", minimum=32), Option("min_fraction", "number", **_FRACTION),
        Option("max_fraction", "number", **_FRACTION))),
    AdapterEntry("phrase_extractor", "shapes", f"{_SHAPES}:ShapesPhraseExtractor", ()),
    AdapterEntry("detector", "shapes", f"{_SHAPES}:ShapesDetector", (
        Option("colour_tolerance", "int", minimum=0, maximum=255), Option("min_area", "int", minimum=1),
        Option("corrupt_fraction", "number", minimum=0, maximum=1), Option("corrupt_seed", "int"))),
    # Real data on disk (adapters/sources.py) and the rule-based phrase chunker.
    AdapterEntry("concepts", "concept-vocabulary", f"{_SOURCES}:ConceptVocabularySampler", (
        Option("vocabulary", "str"), Option("attributes", "str"), Option("min_concepts", "int", minimum=1),
        Option("max_concepts", "int", minimum=1), Option("attribute_probability", "number", minimum=0, maximum=1))),
    AdapterEntry("concepts", "image-folder", f"{_SOURCES}:ImageFolderSampler",
                 (Option("images", "str", required=True), Option("image_root", "str"))),
    AdapterEntry("concepts", "coco-captions", f"{_SOURCES}:CaptionsSampler", (
        Option("captions", "str", required=True), Option("image_root", "str"),
        Option("max_captions", "int", minimum=1))),
    AdapterEntry("phrase_extractor", "noun-phrases", "synground_assets.adapters.noun_phrases:NounPhraseExtractor",
                 (Option("max_words", "int", minimum=1, maximum=16), Option("max_phrases", "int", minimum=1))),
    AdapterEntry("describer", "concatenation", f"{_TEXT}:ConcatenationDescriber",
                 (Option("separator", "str"), Option("max_captions", "int", minimum=1))),
    # transformers / diffusers models (adapters/hf_*.py).
    AdapterEntry("describer", "image-captioner", f"{_TEXT}:ImageCaptioner", _GENERATION + (Option("prompt", "str"),),
                 takes_spec=True),
    AdapterEntry("describer", "llm-concept2text", f"{_TEXT}:ConceptDescriber", _CHAT, takes_spec=True),
    AdapterEntry("describer", "llm-text2text", f"{_TEXT}:CaptionSummarizer", _CHAT, takes_spec=True),
    AdapterEntry("phrase_extractor", "llm-phrases", f"{_TEXT}:LLMPhraseExtractor",
                 _CHAT + (Option("max_words", "int", minimum=1),), takes_spec=True),
    # Any AutoPipelineForText2Image pipeline; max_sequence_length: the T5 / Gemma prompt length (SD3, FLUX,
    # PixArt, Sana); use_resolution_binning: draw at the family's aspect-ratio bins (PixArt, Sana);
    # complex_human_instruction: the lines Sana puts before each prompt ([] for none). Each is an error at
    # load for a family without it (adapters/hf_image.py).
    AdapterEntry("image_generator", "diffusers", f"{_IMAGE}:DiffusersImageGenerator", _PIPELINE + (
        Option("max_sequence_length", "int", minimum=1), Option("use_resolution_binning", "bool"),
        Option("complex_human_instruction", "list")), takes_spec=True),
    AdapterEntry("image_generator", "gligen", f"{_IMAGE}:GligenImageGenerator", _PIPELINE + (
        Option("max_objects", "int", minimum=1), Option("box_min_fraction", "number", **_FRACTION),
        Option("box_max_fraction", "number", **_FRACTION),
        Option("scheduled_sampling_beta", "number", minimum=0, maximum=1),
        Option("layout_phrase_model", "str"), Option("layout_chat_template", "str")), takes_spec=True),
    AdapterEntry("detector", "zero-shot-detector", f"{_DETECT}:ZeroShotDetector", _DETECTOR, takes_spec=True),
    # GLIP, the paper's detector, in the project's own PyTorch port (models/glip/, adapters/glip_detect.py).
    AdapterEntry("detector", "glip", "synground_assets.adapters.glip_detect:GlipDetector", _GLIP, takes_spec=True),
    # The crop verifier of `quality.verify` with `judge: vlm` (adapters/verifier.py): any image-text-to-text
    # chat model the image-captioner describer runs, asked a yes/no question about each box's crop.
    AdapterEntry("verifier", "vlm", "synground_assets.adapters.verifier:VLMVerifier", (), takes_spec=True),
    # The model fine-tuned on the triplets (`grounding_model:` of a recipe, adapters/grounding.py).
    AdapterEntry("grounding_model", "blip", "synground_assets.adapters.grounding:load_grounding_model",
                 _GROUNDING_MODEL, takes_spec=True),
    AdapterEntry("grounding_model", "albef", "synground_assets.adapters.grounding:load_grounding_model",
                 _GROUNDING_MODEL, takes_spec=True),
)

_BY_KEY = {(entry.role, entry.name): entry for entry in CATALOG}
_BY_FACTORY = {entry.factory: entry for entry in CATALOG if entry.role != "grounding_model"}


def find(role: str, adapter: str) -> AdapterEntry | None:
    return _BY_KEY.get((role, adapter))


def adapter_names(role: str) -> list[str]:
    return sorted(entry.name for entry in CATALOG if entry.role == role)


def entry_of(adapter_class: type) -> AdapterEntry:
    """The row of an adapter class (its options), found by the class's import path."""
    return _BY_FACTORY[f"{adapter_class.__module__}:{adapter_class.__qualname__}"]


def role_problems(role: str, spec: Any) -> list[str]:
    """What is wrong with one role of a recipe (`spec`: a RoleSpec), as 'option ...: expected ...,
    got ...' phrases; nothing is imported or loaded."""
    entry = find(role, spec.adapter)
    if entry is None:
        return [f"field 'adapter': expected one of {', '.join(adapter_names(role))}, got {spec.adapter!r}"]
    problems = option_problems(spec.options, entry.options)
    if entry.takes_spec and not spec.model:
        problems.append("field 'model': expected a hub id, a local folder or tiny:<name>, got nothing")
    return problems


def options_problems(adapter_class: type, options: Mapping[str, Any]) -> list[str]:
    """The problems of an adapter's options against its row (empty when they are fine)."""
    return option_problems(options, entry_of(adapter_class).options)
