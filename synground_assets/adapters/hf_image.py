"""Image generators played by diffusers pipelines.

- `DiffusersImageGenerator`: any text-to-image pipeline `AutoPipelineForText2Image` knows (SD 1.x /
  2.x, SDXL and SDXL-Turbo, SD3, FLUX, PixArt, Sana, ...), batched, one seed per item (a
  `torch.Generator` each, so an item's image does not depend on its batch).
- `GligenImageGenerator` (the `gligen` box source): a layout is made first, phrases from the
  description and seeded boxes, then GLIGEN draws the image conditioned on it; the layout's boxes
  come back in `GeneratedImage.layout` and are the item's boxes.

Options: declared in `roles/catalog.py` (names, types, ranges) and explained in docs/models.md
("Image generator options": family-specific options, defaults, resolution binning, Sana's complex
human instruction, GLIGEN's layout options).
"""

from __future__ import annotations

import inspect
import random
import re
from typing import Any, Sequence

import torch

from synground_assets.adapters.hf_common import ModelAdapter, pick_class, pretrained_kwargs, read_json, resolve_model
from synground_assets.adapters.loading import ModelLoadError
from synground_assets.roles.base import GeneratedImage, ImageGenerator
from synground_assets.roles.phrases import filter_phrases
from synground_assets.roles.spec import RoleSpec

# The pipelines this project ran first keep its defaults, so their recipes make the same images.
UNET_DEFAULTS = {"num_inference_steps": 30, "guidance_scale": 7.5}
UNET_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusionGLIGENPipeline")
# Options that only some families take, checked against the pipeline's own call signature.
# Of those, the ones given to the pipeline as the recipe sets them (otherwise the pipeline's defaults).
PASSED_AS_SET = ("use_resolution_binning", "complex_human_instruction")
FAMILY_OPTIONS = ("negative_prompt", "max_sequence_length", *PASSED_AS_SET)

# Article-led noun phrases: "a white teddy bear", stopping before verbs, prepositions and clauses.
_STOP_WORDS = {"a", "an", "the", "and", "or", "with", "on", "in", "at", "of", "to", "by", "near", "next", "under",
               "over", "above", "below", "behind", "beside", "is", "are", "was", "sits", "stands", "that", "which",
               "while", "who", "from", "into", "onto", "for", "its", "their", "his", "her"}


def article_phrases(description: str, max_words: int = 4) -> list[str]:
    """'A cat sleeps on a white couch' -> ['A cat', 'a white couch']: the rule-based layout phrases."""
    phrases = []
    for match in re.finditer(r"\b(?:a|an|the|two|three)\b", description, re.IGNORECASE):
        words = []
        for word in re.finditer(r"[A-Za-z][\w-]*", description[match.end():]):
            token = word.group(0)
            if token.lower() in _STOP_WORDS or token.lower().endswith("ing") or len(words) == max_words:
                break
            words.append(token)
            following = description[match.end() + word.end():]
            if re.match(r"\s*[^\s\w-]", following):  # punctuation ends the phrase
                break
        if words:
            phrases.append(f"{match.group(0)} {' '.join(words)}")
    return phrases


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers renamed `torch_dtype` to `dtype` (0.36+); use whichever this version takes."""
    from diffusers.utils import deprecation_utils

    new_name = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype": dtype} if new_name else {"torch_dtype": dtype}


def text_to_image_pipelines() -> tuple[str, ...]:
    """The pipeline classes `AutoPipelineForText2Image` loads, by the `_class_name` of model_index.json."""
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    return tuple(dict.fromkeys(cls.__name__ for cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values()))


def default_height(pipeline) -> int:
    """The pipeline's native resolution: its latent sample size times the VAE's scale factor."""
    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    sample_size = getattr(pipeline, "default_sample_size", None) or denoiser.config.sample_size
    return int(sample_size * pipeline.vae_scale_factor)


class _DiffusersAdapter(ModelAdapter):
    role = "image_generator"

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        # 1. Check the pipeline class before loading weights (the catalog checked the settings).
        location = resolve_model(spec.model, self.role, spec.revision, required_file="model_index.json")
        class_name = read_json(location, "model_index.json").get("_class_name")
        self.kind, _ = pick_class(class_name, {k: k for k in self.known_pipelines()}, location, self.role)
        # 2. Load the pipeline.
        self.pipeline = self.load_pipeline(location.path, **_dtype_kwarg(self.dtype), **pretrained_kwargs(location))
        self.pipeline = self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        # 3. Generation settings, checked against what this family's pipeline takes.
        options = spec.options
        parameters = inspect.signature(self.pipeline.__call__).parameters
        for name in FAMILY_OPTIONS:
            if name in options and name not in parameters:
                raise ModelLoadError(f"role {self.role!r}: {self.kind} takes no option {name!r}; remove it")
        defaults = UNET_DEFAULTS if self.kind in UNET_PIPELINES else {
            name: parameters[name].default for name in UNET_DEFAULTS}
        self.height = options.get("height") or default_height(self.pipeline)
        self.width = options.get("width") or self.height
        self.num_inference_steps = options.get("num_inference_steps", defaults["num_inference_steps"])
        self.guidance_scale = options.get("guidance_scale", defaults["guidance_scale"])
        self.negative_prompt = options.get("negative_prompt")
        self.max_sequence_length = options.get("max_sequence_length")
        # Resolution binning (PixArt, Sana) and Sana's instruction: the pipeline's defaults unless set.
        self.family_settings = {name: options[name] for name in PASSED_AS_SET if name in options}
        instruction = options.get("complex_human_instruction")
        if instruction is not None and not all(isinstance(line, str) for line in instruction):
            raise ModelLoadError(f"role {self.role!r}: complex_human_instruction must be a list of strings "
                                 f"(or [] for none), got {instruction!r}")
        binning = options.get("use_resolution_binning", getattr(parameters.get("use_resolution_binning"), "default",
                                                                None))
        scale = int(getattr(self.pipeline, "vae_scale_factor", 8))
        if binning is False and (self.height % scale or self.width % scale):
            raise ModelLoadError(f"role {self.role!r}: without resolution binning {self.kind} draws at the asked "
                                 f"size, which must be a multiple of {scale}; got {self.width} x {self.height}")
        self.info.settings.update({"pipeline": self.kind, "height": self.height, "width": self.width,
                                   "num_inference_steps": self.num_inference_steps,
                                   "guidance_scale": self.guidance_scale})
        if binning is not None:
            self.info.settings["use_resolution_binning"] = binning
        if "complex_human_instruction" in parameters:
            self.info.settings["complex_human_instruction"] = bool(
                options.get("complex_human_instruction", parameters["complex_human_instruction"].default))

    def known_pipelines(self) -> tuple[str, ...]:
        return text_to_image_pipelines()

    def load_pipeline(self, path: str, **kwargs):
        from diffusers import AutoPipelineForText2Image

        return AutoPipelineForText2Image.from_pretrained(path, **kwargs)

    def call_settings(self, batch_size: int) -> dict[str, Any]:
        """The pipeline's keyword arguments for a batch, besides prompts and generators."""
        settings: dict[str, Any] = {"height": self.height, "width": self.width,
                                    "num_inference_steps": self.num_inference_steps,
                                    "guidance_scale": self.guidance_scale}
        if self.negative_prompt:
            settings["negative_prompt"] = [self.negative_prompt] * batch_size
        if self.max_sequence_length:
            settings["max_sequence_length"] = self.max_sequence_length
        return {**settings, **self.family_settings}

    def generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        # One generator per item: its initial noise depends on its seed alone.
        return [torch.Generator(device=self.device).manual_seed(int(seed) % 2**63) for seed in seeds]


class DiffusersImageGenerator(_DiffusersAdapter, ImageGenerator):

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[GeneratedImage]:
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        images = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start:start + self.batch_size])
            output = self.pipeline(prompt=batch, generator=self.generators(seeds[start:start + self.batch_size]),
                                   **self.call_settings(len(batch)))
            # The safety checker, when the pipeline has one, blacks out what it flags and says so;
            # the flag travels with the image so the stage records it instead of publishing black.
            flags = getattr(output, "nsfw_content_detected", None) or [False] * len(output.images)
            images += [GeneratedImage(image=image, flagged=bool(flag)) for image, flag in zip(output.images, flags)]
        return images


class GligenImageGenerator(_DiffusersAdapter, ImageGenerator):
    def known_pipelines(self) -> tuple[str, ...]:
        return ("StableDiffusionGLIGENPipeline",)

    def load_pipeline(self, path: str, **kwargs):
        from diffusers import StableDiffusionGLIGENPipeline

        return StableDiffusionGLIGENPipeline.from_pretrained(path, **kwargs)

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        options = spec.options
        self.max_objects = options.get("max_objects", 4)
        self.box_min_fraction = options.get("box_min_fraction", 0.2)
        self.box_max_fraction = options.get("box_max_fraction", 0.5)
        if not 0 < self.box_min_fraction <= self.box_max_fraction <= 1:
            raise ModelLoadError(f"need 0 < box_min_fraction <= box_max_fraction <= 1 but got "
                                 f"{self.box_min_fraction}, {self.box_max_fraction}")
        self.scheduled_sampling_beta = options.get("scheduled_sampling_beta", 0.3)
        self.phrase_model = None
        if options.get("layout_phrase_model"):
            from synground_assets.adapters.hf_text import LLMPhraseExtractor

            self.phrase_model = LLMPhraseExtractor(RoleSpec(
                adapter="llm-phrases", model=options["layout_phrase_model"], dtype=spec.dtype, device=spec.device,
                batch_size=spec.batch_size,
                options=({"chat_template": options["layout_chat_template"]}
                         if options.get("layout_chat_template") else {})))
        self.info.settings.update({"layout_phrases": options.get("layout_phrase_model") or "article-rule"})

    def layout_phrases(self, prompts: Sequence[str]) -> list[list[str]]:
        if self.phrase_model is None:
            candidates = [article_phrases(p) for p in prompts]
        else:
            candidates = [c.phrases for c in self.phrase_model.extract(prompts)]
        return [filter_phrases(p, c)[0][:self.max_objects] for p, c in zip(prompts, candidates)]

    def layout_boxes(self, count: int, seed: int) -> list[tuple[float, float, float, float]]:
        """Seeded boxes, normalised xyxy in [0, 1]; overlap is avoided when there is room."""
        rng = random.Random(seed)
        boxes: list[tuple[float, float, float, float]] = []
        for _ in range(count):
            for _attempt in range(50):
                w = rng.uniform(self.box_min_fraction, self.box_max_fraction)
                h = rng.uniform(self.box_min_fraction, self.box_max_fraction)
                x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
                box = (x0, y0, x0 + w, y0 + h)
                if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
                    break
            boxes.append(box)  # the last try, overlapping, when there is no room left
        return boxes

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[GeneratedImage]:
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        # 1. The layouts, all first (the phrase model runs batched).
        phrases = self.layout_phrases(prompts)
        results = []
        # 2. One image per call: GLIGEN conditions a whole call on one layout.
        for prompt, seed, item_phrases in zip(prompts, seeds, phrases):
            boxes = self.layout_boxes(len(item_phrases), seed)
            # No phrase: a plain text-to-image run (grounding off for every step, beta 0).
            output = self.pipeline(
                prompt=prompt, negative_prompt=self.negative_prompt, height=self.height, width=self.width,
                num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                gligen_phrases=item_phrases or [""], gligen_boxes=[list(b) for b in boxes] or [[0.0, 0.0, 0.0, 0.0]],
                gligen_scheduled_sampling_beta=self.scheduled_sampling_beta if item_phrases else 0.0,
                generator=self.generators([seed])[0],
            )
            image = output.images[0]
            layout = [(p, (b[0] * image.width, b[1] * image.height, b[2] * image.width, b[3] * image.height))
                      for p, b in zip(item_phrases, boxes)]
            flagged = bool((getattr(output, "nsfw_content_detected", None) or [False])[0])
            results.append(GeneratedImage(image=image, layout=layout, flagged=flagged))
        return results

    def release(self) -> None:
        if self.phrase_model is not None:
            self.phrase_model.release()
        super().release()
