"""Tiny vision-language models: LLaVA, LLaVA-NeXT (CLIP vision tower + tiny Llama), Idefics3
(SmolVLM's architecture), Qwen2-VL, Qwen2.5-VL and BLIP captioning (Image2Text)."""

from __future__ import annotations

from pathlib import Path

from synground_assets.tiny.text import llama_config
from synground_assets.tiny.tokenizers import IMAGE, LLAVA_CHAT_TEMPLATE, bert_tokenizer, chat_tokenizer, word_tokenizer

IMAGE_SIZE = 32  # vision towers


def clip_vision_config(image_size: int = IMAGE_SIZE, patch_size: int = 8):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            image_size=image_size, patch_size=patch_size, projection_dim=32)


def build_llava(folder: Path) -> None:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = chat_tokenizer()
    config = LlavaConfig(
        vision_config=clip_vision_config(), text_config=llama_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_llava_next(folder: Path) -> None:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tokenizer = chat_tokenizer()
    pinpoints = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE]]
    config = LlavaNextConfig(
        vision_config=clip_vision_config(), text_config=llama_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE), image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    model = LlavaNextForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_CHAT_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_blip_captioning(folder: Path) -> None:
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )

    tokenizer = bert_tokenizer(bos_token="[DEC]")
    text_config = BlipTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, encoder_hidden_size=32, max_position_embeddings=128,
        bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"), pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id, initializer_range=0.5,
    )
    # initializer_range: BLIP's vision default (1e-10) would give a tower whose output ignores the image.
    vision_config = BlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.5)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text_config.to_dict(),
                                                    vision_config=vision_config.to_dict(), projection_dim=32))
    processor = BlipProcessor(BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


# Idefics3's (SmolVLM's) chat template, as its hub processors ship it.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_idefics3(folder: Path) -> None:
    """Idefics3 (SmolVLM's architecture): a SigLIP-style tower, pixel shuffle, a tiny Llama; its
    PIL image processor (the default one needs torchvision, absent beside the CPU torch wheel)."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = chat_tokenizer(IDEFICS3_CHAT_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
        *[f"<row_{r}_col_{c}>" for r in range(1, 4) for c in range(1, 4)]]})
    config = Idefics3Config(
        text_config=llama_config(tokenizer).to_dict(), scale_factor=2, pad_token_id=tokenizer.pad_token_id,
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
    )
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                                max_image_size={"longest_edge": IMAGE_SIZE})
    # (32 / 8)^2 patches, pixel-shuffled by scale_factor 2: 4 image tokens per image.
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE, image_seq_len=4)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


# Qwen2-VL's (and Qwen2.5-VL's) chat template, as its hub processors ship it.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_PATCH, QWEN2_VL_MERGE = 8, 2  # one image token per 16 x 16 pixels


def _qwen2_vl_tokenizer():
    tokenizer = word_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]})
    return tokenizer


def _qwen2_vl_text_config(tokenizer) -> dict:
    # mrope_section splits the rotary half-dimension (head_dim 8 / 2) among time, height and width.
    return dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, initializer_range=0.5)


def _build_qwen2_vl(folder: Path, config_class, model_class, processor_class, vision_config: dict) -> None:
    """Qwen2-VL's layout: the image is cut into patch_size patches (x2 frames), merged 2 x 2 into one
    token each; its slow (PIL) image processor, and a processor without video processor: the
    video one needs torchvision, absent beside the CPU torch wheel (models/processors.py)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from synground_assets.models.processors import image_only

    tokenizer = _qwen2_vl_tokenizer()
    token = tokenizer.convert_tokens_to_ids
    config = config_class(
        text_config=_qwen2_vl_text_config(tokenizer),
        vision_config={"depth": 2, "num_heads": 4, "patch_size": QWEN2_VL_PATCH, "spatial_merge_size": QWEN2_VL_MERGE,
                       "temporal_patch_size": 2, "initializer_range": 0.5, **vision_config},
        image_token_id=token("<|image_pad|>"), video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"), vision_end_token_id=token("<|vision_end|>"),
    )
    model = model_class(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, token("<|im_end|>")]
    # Between 2 x 2 and 3 x 3 image tokens, whatever the image's size (min_pixels, max_pixels).
    side = QWEN2_VL_PATCH * QWEN2_VL_MERGE
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=QWEN2_VL_PATCH, merge_size=QWEN2_VL_MERGE, temporal_patch_size=2,
        size={"shortest_edge": (2 * side) ** 2, "longest_edge": (3 * side) ** 2})
    processor = image_only(processor_class)(image_processor=image_processor, tokenizer=tokenizer,
                                            chat_template=QWEN2_VL_CHAT_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_qwen2_vl(folder: Path) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    # embed_dim: the tower's width; hidden_size: what its patch merger hands the language model.
    _build_qwen2_vl(folder, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor,
                    {"embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2})


def build_qwen2_5_vl(folder: Path) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    # Qwen2.5-VL's tower attends within windows of window_size pixels (2 x 2 image tokens here) except
    # in its full-attention blocks; out_hidden_size: what its patch merger hands the language model.
    _build_qwen2_vl(folder, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                    {"hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 32,
                     "window_size": 2 * QWEN2_VL_PATCH * QWEN2_VL_MERGE, "fullatt_block_indexes": [1]})


BUILDERS = {"llava": build_llava, "llava-next": build_llava_next, "blip-captioning": build_blip_captioning,
            "idefics3": build_idefics3, "qwen2-vl": build_qwen2_vl, "qwen2.5-vl": build_qwen2_5_vl}
