"""Tiny diffusers pipelines on the shapes of diffusers' own dummy components: Stable Diffusion, GLIGEN
and SDXL (UNets), SD3, FLUX and PixArt-Sigma (transformers with T5 text encoders) and Sana (a linear-attention
transformer, the 32x DC-AE and a Gemma 2 text encoder)."""

from __future__ import annotations

from pathlib import Path

from synground_assets.tiny.tokenizers import clip_tokenizer, gemma_tokenizer, word_tokenizer


def tiny_text_encoder(model_class_name: str = "CLIPTextModel"):
    """A tiny CLIP text tower (`CLIPTextModelWithProjection` for the pooled SDXL/SD3/FLUX inputs)."""
    import transformers
    from transformers import CLIPTextConfig

    tokenizer = clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return getattr(transformers, model_class_name)(config), tokenizer


def tiny_t5_encoder(d_model: int = 32):
    """A tiny T5 encoder and a word-level tokenizer (SD3, FLUX, PixArt read long prompts with T5)."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = word_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    return T5EncoderModel(config), tokenizer


def flow_vae(latent_channels: int):
    """The one-block AutoencoderKL of diffusers' SD3/FLUX dummies: the image keeps the latent size."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


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


def build_stable_diffusion_xl(folder: Path) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    # Two CLIP towers (hidden 32 + 32 = cross-attention 64); the pooled projection (32) and six 8-dim
    # time ids (original size, crop, target size) condition the UNet: 32 + 6 * 8 = 80.
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    text_encoder, tokenizer = tiny_text_encoder()
    text_encoder_2, tokenizer_2 = tiny_text_encoder("CLIPTextModelWithProjection")
    StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                              tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler).save_pretrained(folder)


def build_stable_diffusion_3(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    # Two CLIP towers (pooled 32 + 32) and T5 (64, which the CLIP embeddings are padded to).
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=64, pooled_projection_dim=64, out_channels=4)
    text_encoder, tokenizer = tiny_text_encoder("CLIPTextModelWithProjection")
    text_encoder_2, tokenizer_2 = tiny_text_encoder("CLIPTextModelWithProjection")
    text_encoder_3, tokenizer_3 = tiny_t5_encoder(d_model=64)
    StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=flow_vae(4),
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
    ).save_pretrained(folder)


def build_flux(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    # Latents of 1 channel packed 2x2 into 4; CLIP gives the pooled prompt (32), T5 the tokens (32).
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    text_encoder, tokenizer = tiny_text_encoder()
    text_encoder_2, tokenizer_2 = tiny_t5_encoder(d_model=32)
    FluxPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=flow_vae(1),
                 text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                 tokenizer_2=tokenizer_2).save_pretrained(folder)


def build_pixart_sigma(folder: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3, caption_channels=32,
        in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    # PixArt snaps sizes to its aspect-ratio bins (256 px and up for sample size 32): a VAE that scales
    # by 8, as the real one does, keeps the latents at 32 x 32.
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256,
    )
    text_encoder, tokenizer = tiny_t5_encoder(d_model=32)
    PixArtSigmaPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(), text_encoder=text_encoder,
                        tokenizer=tokenizer).save_pretrained(folder)


def build_sana(folder: Path) -> None:
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    # Sample size 16, Sana's 512 px class: the pipeline's resolution binning (on by default) draws at
    # its 512 px bins and resizes to the asked size. The DC-AE keeps the real one's six stages (32x),
    # so a 512 px bin is 16 x 16 latents and a call stays well under a second on one CPU core (the
    # 2x DC-AE of diffusers' own dummy drew 512 x 512 latents at sample size 32's 1024 px bins).
    transformer = SanaTransformer2DModel(
        sample_size=16, patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2,
        attention_head_dim=8, num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
        caption_channels=32,
    )
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=4,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        encoder_block_out_channels=(4, 4, 8, 8, 8, 8), decoder_block_out_channels=(4, 4, 8, 8, 8, 8),
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        encoder_layers_per_block=(1,) * 6, decoder_layers_per_block=(1,) * 6, downsample_block_type="pixel_unshuffle",
        upsample_block_type="pixel_shuffle", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    tokenizer = gemma_tokenizer()
    # Room for the pipeline's default complex human instruction (about 200 words here) before the prompt.
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=64, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    # Sana's own scheduler: DPM-Solver++ on flow-matching sigmas.
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                 scheduler=scheduler).save_pretrained(folder)


BUILDERS = {
    "stable-diffusion": build_stable_diffusion, "gligen": build_gligen,
    "stable-diffusion-xl": build_stable_diffusion_xl, "stable-diffusion-3": build_stable_diffusion_3,
    "flux": build_flux, "pixart-sigma": build_pixart_sigma, "sana": build_sana,
}
