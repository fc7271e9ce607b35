"""What one call of a tiny Sana pipeline costs on the CPU, with and without the pipeline's resolution
binning, for `tiny:sana` and for a pipeline on the shapes of diffusers' own Sana test dummy.

SanaPipeline bins by the transformer's sample size (32: the 1024 px bins, 16: 512 px) and draws at
the bin nearest the asked size, then resizes to it. diffusers' dummy (sample size 32, a 2-stage
DC-AE that halves) thus draws a 64 px request at 1024 x 1024 px, 512 x 512 latents; `tiny:sana`
(sample size 16, the real DC-AE's six stages, 32x) draws it at 512 px, 16 x 16 latents. Both are
loaded through the adapter (`DiffusersImageGenerator`, `from_pretrained`), one thread, 2 steps,
one prompt per call, `--repeats` calls after a warm-up; the median is reported.

    python -m bench.throughput.sana_tiny [--size 64] [--repeats 3]

Prints a table and writes bench/results/sana_tiny.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.harness import repeat, write_result


def build_diffusers_dummy(folder: Path) -> None:
    """The components of diffusers' tests/pipelines/sana get_dummy_components, with the tiny tokenizer."""
    import torch
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    from synground_assets.tiny.tokenizers import gemma_tokenizer

    torch.manual_seed(0)
    tokenizer = gemma_tokenizer()
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=32)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407)
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=16, hidden_size=8, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
        num_key_value_heads=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                 scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0)).save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from synground_assets import tiny
    from synground_assets.adapters.hf_image import DiffusersImageGenerator
    from synground_assets.config.recipes import RoleSpec

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        dummy = Path(scratch) / "diffusers-dummy"
        build_diffusers_dummy(dummy)
        models = {"tiny:sana": str(tiny.ensure_tiny("sana", Path(scratch))), "diffusers dummy": str(dummy)}
        for label, model in models.items():
            for binning in (True, False):
                generator = DiffusersImageGenerator(RoleSpec(
                    adapter="diffusers", model=model, device="cpu", batch_size=1,
                    options={"height": args.size, "num_inference_steps": 2, "max_sequence_length": 16,
                             "use_resolution_binning": binning}))
                generator.generate(["a red cat on a blue couch"], [0])  # warm-up
                seeds = iter(range(args.repeats))  # one seed per timed call: 0, 1, ...
                timing = repeat(lambda generator=generator, seeds=seeds: generator.generate(
                    ["a red cat on a blue couch"], [next(seeds)])[0].image, args.repeats)
                image, times = timing.last, timing.wall
                generator.release()
                assert image.size == (args.size, args.size), image.size
                rows.append({"model": label, "use_resolution_binning": binning, "size": args.size,
                             "median_s": timing.median, "times_s": times})
                print(f"{label:16} binning={binning!s:5} {args.size} px: {timing.median:.3f} s per call "
                      f"(median of {args.repeats})", flush=True)
    write_result({"rows": rows}, "sana_tiny")


if __name__ == "__main__":
    main()
