"""Tiny models that only the tests use, registered with the `tiny:` source by the `tiny_models`
fixture (conftest.py): they are not shipped in the package."""

from __future__ import annotations

from pathlib import Path

from synground_assets import tiny
from synground_assets.tiny.diffusion import stable_diffusion_pipeline
from synground_assets.tiny.vision_language import IMAGE_SIZE


def build_stable_diffusion_flagging(folder: Path) -> None:
    """Tiny Stable Diffusion with a real `StableDiffusionSafetyChecker` (tiny CLIP vision tower) whose
    concept thresholds are set to -2, below any cosine similarity: it flags every image, so the
    pipeline returns black images with `nsfw_content_detected` all True, as a real checker does
    when it fires. Nothing of the generator's output is faked: the pipeline's own check runs."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)
    extractor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    stable_diffusion_pipeline(StableDiffusionPipeline, checker, extractor).save_pretrained(folder)


TEST_BUILDERS = {"stable-diffusion-flagging": build_stable_diffusion_flagging}


def register_test_models() -> None:
    for name, builder in TEST_BUILDERS.items():
        tiny.register(name, builder)
