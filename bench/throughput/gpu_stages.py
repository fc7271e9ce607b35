"""GPU throughput of the model stages at full size, with random weights (nothing is downloaded).

Builds each stage's architecture from its config at the size of the paper recipes' checkpoints and
times it at several batch sizes:

- generator: Stable Diffusion 2.x base (OpenCLIP-H text encoder, UNet, VAE) at 512 px, 30 steps,
  classifier-free guidance (the UNet sees 2 x batch), VAE decode included;
- describer: LLaVA-1.5 7B (CLIP ViT-L/14 at 336 px + a Llama-2-7B-size LM), 576 image tokens + a
  40-token prompt, 64 new tokens forced (random weights would stop at a random EOS);
- detector: Grounding DINO base (Swin-B backbone, BERT-base text encoder, 900 queries) at 800 px
  with a 4-phrase caption;
- glip: GLIP, the paper's detector, in the project's port (`models/glip/`): GLIP-T (Swin-T, BERT-base,
  6 VL-DyHead layers; `--glip-variant large` for GLIP-L) at the demo's 800 px with a 4-phrase caption
  padded to 256 tokens, `model.detect` timed whole (forward, anchors, decoding, NMS), in float32 as the
  paper recipes run it (`--glip-dtype`).

For each batch size: items/s, peak GPU memory, and the share of the compute floor reached: FLOPs
per item (counted once with torch's FlopCounterMode) x items/s / the GPU's peak dense bf16 FLOP/s
(H200: 989 TFLOP/s). The describer also reports the share of its decode memory floor (every new
token reads all weights once per batch; H200: 4.8 TB/s), the bound that matters for decoding.
Writes JSON (default bench/results/gpu_stages.json).

    python -m bench.throughput.gpu_stages [--stages generator describer detector glip] [--batch-sizes 1 4 16]
    python -m bench.throughput.gpu_stages --tiny     # tiny configs; runs on the CPU too (a check of this script)
    python -m bench.throughput.gpu_stages --flops-only [--stages generator turbo] [--turbo-steps 1]

- turbo: the same architecture distilled for 1-4 steps without guidance (stabilityai/sd-turbo,
  `--turbo-steps`, default 1): the biggest cost lever of the workload.

`--flops-only` counts each generator's FLOPs per item on the meta device (no GPU needed) and prints
the H200 compute floor per image and per 1M images: the estimate used where no GPU was measured.

Without a CUDA GPU (and without --tiny) it says so and exits with status 0.

    python -m bench.throughput.gpu_stages --adapters [--recipe tiny-concept2text] [--items 64]

`--adapters` times the project's own stages (`pipeline/`: the describer, image and box stages,
with their checks, hashes, previews, background PNG writes and the next batch's images read ahead)
over one shard, next to the same adapters' bare model calls on the same items and batches (the
adapter's `describe` / `generate` / `detect`, inputs already in memory, nothing written), and
reports items/s of both and their ratio (target >= 0.95). The box stage reads its images from the
PNG files the image stage wrote; its bare call gets them decoded in memory, so it is also timed
against a second bare call that decodes the same PNGs itself (`bare_decode_items_per_s`). Bare and stage
calls alternate, each timed `--repeats` times (best kept), so a change of load hits both alike.
`--stages` picks the stages timed (the earlier ones still run once to make the later ones' inputs).
The recipe's models run on the GPU when there is one (their `device` set to cuda), else on the CPU;
tiny recipes need no download.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.harness import Stopwatch, alternate, check_target, repeat, result_path, write_result

PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense, no sparsity
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}  # bytes/s, HBM
DEFAULT_BATCH_SIZES = {"generator": [1, 4, 8, 16], "turbo": [1, 4, 16, 32], "describer": [1, 8, 32, 64],
                       "detector": [1, 4, 8, 16], "glip": [1, 4, 8]}
TINY_BATCH_SIZES = [1, 2]


def gpu_peak(device: torch.device, table: dict[str, float]) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in table.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(step: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        step()
    return float(counter.get_total_flops())


# --- the stages: build(tiny, device, dtype) -> (make_step(batch_size) -> step, facts) ------------


def build_generator(tiny: bool, device: torch.device, dtype: torch.dtype, steps: int, guidance: bool = True):
    """Stable Diffusion 2.x base; `guidance`: classifier-free guidance (the UNet sees 2 x batch),
    off for the distilled turbo models (stabilityai/sd-turbo: the same architecture, 1-4 steps,
    guidance_scale 0)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    building = torch.device("meta") if device.type == "meta" else contextlib.nullcontext()  # --flops-only
    with building:
        if tiny:
            text_config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4)
            unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
                                        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                        attention_head_dim=4, norm_num_groups=8)
            vae = AutoencoderKL(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
                                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        else:  # stabilityai/stable-diffusion-2-1-base
            text_config = CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                         num_attention_heads=16, hidden_act="gelu", projection_dim=512)
            unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                        use_linear_projection=True)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text_encoder = CLIPTextModel(text_config)
    for module in (text_encoder, unet, vae):
        module.to(device=device, dtype=dtype).eval()
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    latent_size = unet.config.sample_size

    def make_step(batch_size: int):
        copies = 2 if guidance else 1  # prompt + negative prompt, or the prompt alone
        tokens = torch.randint(0, text_config.vocab_size, (copies * batch_size, 77), device=device)
        generator = torch.Generator(device=device).manual_seed(0) if device.type != "meta" else None

        def step():
            context = text_encoder(tokens).last_hidden_state  # (copies x B, 77, D)
            latents = torch.randn(batch_size, 4, latent_size, latent_size, device=device, dtype=dtype,
                                  generator=generator)
            scheduler.set_timesteps(steps)
            for t in scheduler.timesteps:
                noise = unet(torch.cat([latents] * copies), t, encoder_hidden_states=context).sample
                if guidance:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + 7.5 * (cond - uncond)
                latents = scheduler.step(noise, t, latents).prev_sample
            return vae.decode(latents / vae.config.scaling_factor).sample  # (B, 3, 8 * latent, 8 * latent)

        return step

    params = sum(p.numel() for m in (text_encoder, unet, vae) for p in m.parameters())
    return make_step, {"parameters": params, "steps": steps, "image_px": latent_size * 8,
                       "guidance": "cfg x2" if guidance else "none"}


def build_describer(tiny: bool, device: torch.device, dtype: torch.dtype, new_tokens: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if tiny:
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=56, patch_size=14)
        text = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4)
    else:  # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 + Vicuna-7B (Llama-2-7B architecture)
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32, max_position_embeddings=4096)
    image_token = text.vocab_size - 1
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token,
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    image_tokens = (vision.image_size // vision.patch_size) ** 2
    prompt_tokens = 40

    def make_step(batch_size: int):
        text_ids = torch.randint(3, image_token, (batch_size, prompt_tokens), device=device)
        images = torch.full((batch_size, image_tokens), image_token, device=device)
        input_ids = torch.cat([text_ids[:, :5], images, text_ids[:, 5:]], dim=1)
        pixels = torch.randn(batch_size, 3, vision.image_size, vision.image_size, device=device, dtype=dtype)

        def step():
            return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                  pixel_values=pixels, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, pad_token_id=0)

        return step

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    facts = {"parameters": sum(p.numel() for p in model.parameters()), "image_tokens": image_tokens,
             "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "weight_bytes": weight_bytes}
    return make_step, facts


def build_detector(tiny: bool, device: torch.device, dtype: torch.dtype, size: int):
    from transformers import BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection, SwinConfig

    if tiny:
        backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                              out_features=["stage2", "stage3", "stage4"])
        text = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          intermediate_size=64)
        extra = dict(d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                     num_queries=20, encoder_attention_heads=2, decoder_attention_heads=2)
        size = min(size, 128)
    else:  # IDEA-Research/grounding-dino-base: Swin-B (384 px pretraining), BERT-base
        backbone = SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                              image_size=384, out_features=["stage2", "stage3", "stage4"])
        text = BertConfig()
        extra = {}
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, use_timm_backbone=False,
                                 use_pretrained_backbone=False, **extra)
    with torch.device(device):
        model = GroundingDinoForObjectDetection._from_config(config, dtype=dtype).eval()
    caption_tokens = 20  # "[CLS] a cat . a red couch . a white teddy bear . a lamp . [SEP]"

    def make_step(batch_size: int):
        pixels = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
        input_ids = torch.randint(1000, 2000, (batch_size, caption_tokens), device=device) % text.vocab_size
        mask = torch.ones_like(input_ids)

        def step():
            return model(pixel_values=pixels, input_ids=input_ids, attention_mask=mask,
                         pixel_mask=torch.ones(batch_size, size, size, dtype=torch.long, device=device))

        return step

    return make_step, {"parameters": sum(p.numel() for p in model.parameters()), "image_px": size,
                       "caption_tokens": caption_tokens, "queries": config.num_queries}


def build_glip(tiny: bool, device: torch.device, dtype: torch.dtype, size: int, variant: str):
    """GLIP-T (or GLIP-L) with random weights; a square image of `size` px padded to the size
    divisibility, and the caption "a cat . a red couch . a white teddy bear . a lamp . " padded to 256."""
    from synground_assets.models.glip.config import PRESETS
    from synground_assets.models.glip.modeling import GlipForGrounding

    if tiny:
        from synground_assets.tiny.glip import tiny_glip_config

        config = tiny_glip_config(vocab_size=1000)
        size = min(size, 128)
    else:
        config = PRESETS[variant]()
    with torch.device(device):
        model = GlipForGrounding(config)
    model = model.to(device=device, dtype=dtype).eval()
    divisor = config.size_divisibility
    padded = -(-size // divisor) * divisor
    # Token positions of the four phrases in "[CLS] a cat . a red couch . a white teddy bear . a lamp . [SEP]".
    phrases = {1: [1, 2], 2: [4, 5, 6], 3: [8, 9, 10, 11], 4: [13, 14]}
    caption_tokens = 17

    def make_step(batch_size: int):
        pixels = torch.zeros(batch_size, 3, padded, padded, device=device, dtype=dtype)
        pixels[:, :, :size, :size] = torch.randn(batch_size, 3, size, size, device=device, dtype=dtype)
        input_ids = torch.zeros(batch_size, config.max_query_len, dtype=torch.long, device=device)
        input_ids[:, :caption_tokens] = torch.randint(1000, 2000, (batch_size, caption_tokens), device=device) % \
            config.vocab_size
        mask = (input_ids != 0).long()
        mask[:, :caption_tokens] = 1

        def step():
            return model.detect(pixels, [(size, size)] * batch_size, input_ids, mask, [phrases] * batch_size)

        return step

    return make_step, {"parameters": sum(p.numel() for p in model.parameters()), "variant": config.variant,
                       "image_px": size, "padded_px": padded, "query_tokens": config.max_query_len,
                       "caption_tokens": caption_tokens, "dtype": str(dtype).removeprefix("torch.")}


# --- measuring -----------------------------------------------------------------------------------


def measure(make_step, batch_sizes: list[int], device: torch.device, repeats: int) -> tuple[float, list[dict]]:
    """FLOPs per item (counted at batch 1) and, per batch size, the best of `repeats` timed runs."""
    with torch.inference_mode():
        make_step(1)()  # warm-up: kernels, allocator, cuDNN autotuning
    flops_per_item = count_flops(make_step(1))
    rows = []
    for batch_size in batch_sizes:
        try:
            step = make_step(batch_size)
            with torch.inference_mode():
                step()  # warm-up at this shape
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                timing = repeat(step, repeats, sync=lambda: synchronize(device))
        except torch.cuda.OutOfMemoryError:
            rows.append({"batch_size": batch_size, "error": "out of memory"})
            torch.cuda.empty_cache()
            continue
        seconds = timing.best
        row = {"batch_size": batch_size, "seconds": seconds, "items_per_s": batch_size / seconds}
        if device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows.append(row)
    return flops_per_item, rows


def run_stage(name: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    builders = {
        "generator": lambda: build_generator(args.tiny, device, dtype, args.steps),
        "turbo": lambda: build_generator(args.tiny, device, dtype, args.turbo_steps, guidance=False),
        "describer": lambda: build_describer(args.tiny, device, dtype, args.new_tokens),
        "detector": lambda: build_detector(args.tiny, device, dtype, args.detector_size),
        "glip": lambda: build_glip(args.tiny, device, getattr(torch, args.glip_dtype), args.detector_size,
                                   args.glip_variant),
    }
    with Stopwatch() as watch:
        make_step, facts = builders[name]()
    build_seconds = watch.wall
    batch_sizes = args.batch_sizes or (TINY_BATCH_SIZES if args.tiny else DEFAULT_BATCH_SIZES[name])
    flops_per_item, rows = measure(make_step, batch_sizes, device, args.repeats)
    peak, bandwidth = gpu_peak(device, PEAK_BF16_FLOPS), gpu_peak(device, PEAK_BANDWIDTH)
    for row in rows:
        if "items_per_s" not in row:
            continue
        if peak and facts.get("dtype") != "float32":  # the peak is bf16's; a float32 share would mislead
            row["compute_floor_share"] = flops_per_item * row["items_per_s"] / peak
        if bandwidth and name == "describer":
            # Decoding reads every weight once per new token, for the whole batch at once.
            floor_seconds = facts["new_tokens"] * facts["weight_bytes"] / bandwidth
            row["memory_floor_share"] = floor_seconds / row["seconds"]
    return {"build_seconds": build_seconds, "flops_per_item": flops_per_item, **facts, "results": rows}


def print_stage(name: str, stage: dict) -> None:
    print(f"{name}: {stage['parameters'] / 1e6:.1f}M parameters, {stage['flops_per_item'] / 1e12:.3f} TFLOP/item")
    for row in stage["results"]:
        if "error" in row:
            print(f"  batch {row['batch_size']:>3}: {row['error']}")
            continue
        extra = "".join(f"  {key} {row[key]:.3f}" for key in ("peak_memory_gib", "compute_floor_share",
                                                               "memory_floor_share") if key in row)
        print(f"  batch {row['batch_size']:>3}: {row['items_per_s']:8.2f} items/s{extra}")


# --- the project's stages against their adapters' bare model calls -------------------------------


def adapter_recipe(name: str, items: int, device: torch.device):
    import dataclasses

    from synground_assets.config.recipes import recipe_book

    recipe = recipe_book().get(name)
    roles = {role: dataclasses.replace(spec, device=device.type) if spec.model else spec
             for role, spec in recipe.roles.items()}
    return dataclasses.replace(recipe, shard_size=items, roles=roles)


def bench_suite(recipe):
    """The model suite of this bench's recipe (its shard size and device), not the book's."""
    from synground_assets.adapters.build import build_role
    from synground_assets.adapters.suite import ModelSuite

    class Suite(ModelSuite):
        def role(self, recipe_name, role):
            return self._cached(role, lambda: build_role(role, recipe.roles[role], recipe=recipe.name))

    return Suite()


def nothing_earlier(asset: str):
    """The cross-shard dedup lookup of a shard with no earlier shards."""
    import pandas as pd

    columns = {"descriptions": ["item_id", "description"], "images": ["item_id", "phash"]}[asset]
    return lambda keys: pd.DataFrame(columns=columns)


def draw_shard(recipe, shard: str, described, suite, folder: Path):
    """The image stage over the shard's descriptions, its PNG files written into `folder`."""
    from synground_assets.pipeline.images import draw_images
    from synground_assets.pipeline.writing import PngWriter

    with PngWriter(folder) as files:
        return draw_images(recipe, shard, described, suite, nothing_earlier("images"), files=files)


def bench_shard(recipe, shard: str, suite, image_folder: Path):
    """One shard's concepts, descriptions, drawn images (PNG files in `image_folder`) and phrases."""
    from synground_assets.pipeline.concepts import sample_concepts
    from synground_assets.pipeline.descriptions import describe_items
    from synground_assets.pipeline.phrases import extract_phrases

    concepts = sample_concepts(recipe, shard, suite).table
    described = describe_items(recipe, shard, concepts, suite, nothing_earlier("descriptions")).table
    drawn = draw_shard(recipe, shard, described, suite, image_folder)
    return concepts, described, drawn, extract_phrases(recipe, shard, described, suite).table


def detector_work(images, phrases, image_folder: Path):
    """What the detector's bare calls take: item -> its PNG file, item -> its image decoded in memory,
    and (item, its kept phrases) of the items with some."""
    from PIL import Image

    kept = phrases[phrases.kept]
    files = dict(zip(images.item_id, images.file))
    pictures = {item: Image.open(image_folder / file).convert("RGB") for item, file in files.items()}
    work_items = [(item, list(kept.phrase[kept.item_id == item])) for item in images.item_id]
    return files, pictures, [(item, texts) for item, texts in work_items if texts]


def run_adapters(args, device: torch.device) -> dict:
    """Per stage: the bare adapter calls and the stage, items/s each (best of `repeats`, after a warm-up)."""
    import tempfile

    from PIL import Image

    from synground_assets.pipeline.batching import batches
    from synground_assets.pipeline.boxes import BoxInputs, box_phrases
    from synground_assets.pipeline.descriptions import describe_items, source_items
    from synground_assets.records.items import derive_seed

    recipe, shard = adapter_recipe(args.recipe, args.items, device), "00000"
    suite = bench_suite(recipe)
    work = Path(tempfile.mkdtemp(prefix="synground-adapters-"))
    size = {role: spec.batch_size for role, spec in recipe.roles.items()}
    image_folder = work / "images"
    concepts, described, drawn, phrases = bench_shard(recipe, shard, suite, image_folder)
    items = source_items(concepts)
    prompts = list(zip(described.item_id, described.description))
    inputs = BoxInputs(drawn.table, phrases, image_folder)
    files, pictures, work_items = detector_work(drawn.table, phrases, image_folder)
    generator, describer, detector = suite.image_generator(recipe.name), suite.describer(recipe.name), \
        suite.detector(recipe.name)

    def detect(images_of):
        return [detector.detect([images_of(i) for i, _ in batch], [t for _, t in batch])
                for batch in batches(work_items, size["detector"])]

    stages = {
        "describer": (len(items),
                      lambda: [describer.describe(batch) for batch in batches(items, size["describer"])],
                      lambda: describe_items(recipe, shard, concepts, suite, nothing_earlier("descriptions"))),
        "generator": (len(prompts),
                      lambda: [generator.generate([t for _, t in batch], [derive_seed("image", i) for i, _ in batch])
                               for batch in batches(prompts, size["image_generator"])],
                      lambda: draw_shard(recipe, shard, described, suite, work / f"images-{time.monotonic_ns()}")),
        "detector": (len(work_items), lambda: detect(pictures.__getitem__),
                     lambda: box_phrases(recipe, shard, inputs, suite)),
    }
    # The detector's bare calls once more, each image decoded from its PNG file first (as the stage must).
    decoding = {"detector": lambda: detect(lambda item: Image.open(image_folder / files[item]).convert("RGB"))}
    report = {"recipe": recipe.name, "items": args.items, "device": device.type, "repeats": args.repeats,
              "stages": {}}
    for name, (count, bare, stage) in stages.items():
        if name not in args.stages:
            continue
        calls = {"bare": bare, "stage": stage, **({"bare + decode": decoding[name]} if name in decoding else {})}
        # Warm-up at these shapes, then the calls alternate within each round; the best is kept.
        bare_s, stage_s, *decode_s = (timing.best for timing in alternate(calls, args.repeats, warmup=True).values())
        row = report["stages"][name] = {"items": count, "bare_items_per_s": count / bare_s,
                                        "stage_items_per_s": count / stage_s, "stage_to_bare": bare_s / stage_s}
        line = (f"  {name:10s} {count:5d} items  bare {row['bare_items_per_s']:8.1f} items/s  "
                f"stage {row['stage_items_per_s']:8.1f} items/s  stage/bare {row['stage_to_bare']:.3f}")
        if decode_s:
            row.update(bare_decode_items_per_s=count / decode_s[0], stage_to_bare_decode=decode_s[0] / stage_s)
            line += (f"  (bare decoding the PNGs {row['bare_decode_items_per_s']:.1f} items/s, "
                     f"stage/that {row['stage_to_bare_decode']:.3f})")
        print(line, flush=True)
        check_target(f"{name} stage/bare", row["stage_to_bare"], 0.95, at_most=False)
    return report


def flops_only(args, dtype: torch.dtype) -> int:
    """FLOPs per item of each full-size stage at batch 1, counted on the meta device (shapes only:
    minutes of CPU, no memory), and the time per item and GPU-hours per 1M items it implies at the
    H200's peak dense bf16 rate: a floor, never reached (measured shares are in the GPU runs)."""
    peak = PEAK_BF16_FLOPS["H200"]
    report = {"mode": "flops-only", "device": "meta", "peak_bf16_flops": peak, "stages": {}}
    builders = {"generator": lambda: build_generator(False, torch.device("meta"), dtype, args.steps),
                "turbo": lambda: build_generator(False, torch.device("meta"), dtype, args.turbo_steps,
                                                 guidance=False)}
    for name in args.stages:
        if name not in builders:
            print(f"{name}: not counted on the meta device (LLaVA's generate branches on token values, Grounding "
                  "DINO's forward makes CPU tensors, GLIP's post-processing selects boxes by value: none runs "
                  "on shapes alone); measure it on a GPU")
            continue
        make_step, facts = builders[name]()
        flops = count_flops(make_step(1))
        floor_s = flops / peak
        report["stages"][name] = {**facts, "flops_per_item": flops, "floor_seconds_per_item": floor_s,
                                  "floor_gpu_hours_per_million": floor_s * 1e6 / 3600}
        print(f"{name}: {facts['steps']} step(s), guidance {facts['guidance']}, {flops / 1e12:.2f} TFLOP/item, "
              f"H200 floor {floor_s * 1e3:.1f} ms/item, {floor_s * 1e6 / 3600:.1f} GPU-hours per 1M images")
    write_result(report, args.out.with_name("gpu_stages_flops.json") if args.out.name == "gpu_stages.json"
                 else args.out)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=["generator", "turbo", "describer", "detector", "glip"],
                        choices=["generator", "turbo", "describer", "detector", "glip"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="the same batch sizes for every stage")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps of the generator")
    parser.add_argument("--turbo-steps", type=int, default=1, help="denoising steps of the turbo generator (1-4)")
    parser.add_argument("--flops-only", action="store_true",
                        help="count FLOPs per item on the meta device (no GPU, nothing computed) and print the "
                             "H200 compute floor: the estimate where no GPU was measured")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens the describer generates")
    parser.add_argument("--detector-size", type=int, default=800, help="detector input side, pixels")
    parser.add_argument("--glip-variant", default="tiny", choices=["tiny", "tiny-a", "large"],
                        help="glip stage: GLIP-T (tiny), GLIP-T (A) or GLIP-L (large)")
    parser.add_argument("--glip-dtype", default="float32", choices=["bfloat16", "float16", "float32"],
                        help="glip stage's dtype (the paper recipes run GLIP in float32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size (best is kept)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tiny", action="store_true", help="tiny configs, CPU allowed: checks this script")
    parser.add_argument("--adapters", action="store_true",
                        help="the project's stages over one shard against their adapters' bare model calls")
    parser.add_argument("--recipe", default="tiny-concept2text", help="--adapters: the recipe whose models run")
    parser.add_argument("--items", type=int, default=64, help="--adapters: items in the shard")
    parser.add_argument("--out", type=Path, default=result_path("gpu_stages"))
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.tiny or args.adapters or args.flops_only:
        device = torch.device("cpu")
    else:
        print("gpu_stages: no CUDA GPU is available to torch "
              f"(torch {torch.__version__}, cuda build: {torch.version.cuda or 'none'}); nothing measured. "
              "Run it on a GPU machine, or with --tiny to check the script on the CPU.")
        return 0
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.flops_only:
        return flops_only(args, dtype)
    if args.adapters:
        report = run_adapters(args, device)
        write_result(report, args.out.with_name("gpu_stages_adapters.json") if args.out.name == "gpu_stages.json"
                     else args.out)
        return 0
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": args.dtype, "tiny": args.tiny,
        "peak_bf16_flops": gpu_peak(device, PEAK_BF16_FLOPS), "peak_bandwidth": gpu_peak(device, PEAK_BANDWIDTH),
        "stages": {},
    }
    for name in args.stages:
        report["stages"][name] = run_stage(name, args, device, dtype)
        print_stage(name, report["stages"][name])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_result(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
