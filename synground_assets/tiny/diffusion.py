"""Tiny diffusers pipelines: Stable Diffusion and GLIGEN, on diffusers' own dummy components."""

from __future__ import annotations

from pathlib import Path

from synground_assets.tiny.tokenizers import clip_tokenizer


def tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config), tokenizer


def stable_diffusion_pipeline(pipeline_class, safety_checker=None, feature_extractor=None, **unet_kwargs):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    # diffusers' own get_dummy_components: 32x32 latents, a VAE that halves, so 64 px images.
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=4, **unet_kwargs,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    text_encoder, tokenizer = tiny_text_encoder()
    return pipeline_class(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                          safety_checker=safety_checker, feature_extractor=feature_extractor,
                          requires_safety_checker=safety_checker is not None)


def build_stable_diffusion(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    stable_diffusion_pipeline(StableDiffusionPipeline).save_pretrained(folder)


def build_gligen(folder: Path) -> None:
    from diffusers import StableDiffusionGLIGENPipeline

    stable_diffusion_pipeline(StableDiffusionGLIGENPipeline, attention_type="gated").save_pretrained(folder)


BUILDERS = {"stable-diffusion": build_stable_diffusion, "gligen": build_gligen}
