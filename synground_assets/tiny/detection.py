"""Tiny open-vocabulary detectors: Grounding DINO, MM-Grounding-DINO, OWLv2, OWL-ViT and OmDet-Turbo."""

from __future__ import annotations

from pathlib import Path

from synground_assets.tiny.tokenizers import bert_tokenizer, clip_tokenizer

DETECTOR_IMAGE_SIZE = 64


def _grounding_dino_kwargs(tokenizer) -> dict:
    from transformers import BertConfig, SwinConfig

    return dict(
        backbone_config=SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                   image_size=DETECTOR_IMAGE_SIZE, out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=37, max_position_embeddings=128),
        use_timm_backbone=False, use_pretrained_backbone=False,
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=10, num_feature_levels=4,
        encoder_n_points=2, decoder_n_points=2, max_text_len=64, init_std=0.02,
    )


def _build_grounding_dino(folder: Path, config_class, model_class) -> None:
    from transformers import GroundingDinoImageProcessorPil, GroundingDinoProcessor

    tokenizer = bert_tokenizer()
    model = model_class(config_class(**_grounding_dino_kwargs(tokenizer)))
    # Four feature levels, the last at 1/64 scale: smaller inputs would leave it a single pixel.
    size = {"shortest_edge": 96, "longest_edge": 128}
    processor = GroundingDinoProcessor(GroundingDinoImageProcessorPil(size=size), tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_grounding_dino(folder: Path) -> None:
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    _build_grounding_dino(folder, GroundingDinoConfig, GroundingDinoForObjectDetection)


def build_mm_grounding_dino(folder: Path) -> None:
    from transformers import MMGroundingDinoConfig, MMGroundingDinoForObjectDetection

    _build_grounding_dino(folder, MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)


def _build_owl(folder: Path, config_class, model_class, image_processor, processor_class) -> None:
    """OWLv2 and OWL-ViT share their layout: CLIP towers and a box head per patch."""
    tokenizer = clip_tokenizer(model_max_length=16)
    text_config = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision_config = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         image_size=DETECTOR_IMAGE_SIZE, patch_size=8)
    model = model_class(config_class(text_config=text_config, vision_config=vision_config, projection_dim=32,
                                     initializer_factor=0.1))
    size = {"height": DETECTOR_IMAGE_SIZE, "width": DETECTOR_IMAGE_SIZE}
    processor = processor_class(image_processor(size), tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_owlv2(folder: Path) -> None:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    _build_owl(folder, Owlv2Config, Owlv2ForObjectDetection, lambda size: Owlv2ImageProcessorPil(size=size),
               Owlv2Processor)


def build_owlvit(folder: Path) -> None:
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessorPil, OwlViTProcessor

    # OWL-ViT resizes to a square without padding (OWLv2 pads): no centre crop at the tiny size.
    _build_owl(folder, OwlViTConfig, OwlViTForObjectDetection,
               lambda size: OwlViTImageProcessorPil(size=size, do_center_crop=False), OwlViTProcessor)


def build_omdet_turbo(folder: Path) -> None:
    """OmDet-Turbo: a Swin backbone (transformers' own, not timm's), a CLIP text tower encoding the task
    prompt and each class, an encoder and a deformable decoder; DETR's PIL image processor at a fixed
    square size, unpadded, as the hub checkpoint's. Its processor class needs torchvision only for
    its post-processing, so it is built from its own module (models/processors.py)."""
    from transformers import (
        CLIPTextConfig,
        DetrImageProcessorPil,
        OmDetTurboConfig,
        OmDetTurboForObjectDetection,
        SwinConfig,
    )

    from synground_assets.models.processors import torchvision_free_processor_class

    tokenizer = clip_tokenizer()  # the processor pads every prompt to CLIP's 77 tokens
    text_config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    backbone_config = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                 image_size=DETECTOR_IMAGE_SIZE, out_indices=[2, 3, 4])
    # class_embed_dim: the text tower's width; it must differ from the decoder's (transformers only
    # builds the task projection between them when they differ, as in the hub checkpoint's 512 vs 256).
    config = OmDetTurboConfig(
        backbone_config=backbone_config, text_config=text_config, image_size=DETECTOR_IMAGE_SIZE,
        apply_layernorm_after_vision_backbone=False,  # that layer norm reads timm's channels-last maps
        encoder_in_channels=[16, 32, 64], vision_features_channels=[16, 16, 16], encoder_hidden_dim=16,
        encoder_attention_heads=2, encoder_dim_feedforward=32, text_projection_in_dim=32, text_projection_out_dim=32,
        class_embed_dim=32, task_encoder_hidden_dim=32, decoder_hidden_dim=16, decoder_num_heads=2,
        decoder_num_layers=2, decoder_dim_feedforward=32, decoder_num_points=2, num_queries=10,
    )
    model = OmDetTurboForObjectDetection(config)
    image_processor = DetrImageProcessorPil(size={"height": DETECTOR_IMAGE_SIZE, "width": DETECTOR_IMAGE_SIZE},
                                            do_pad=False)
    processor = torchvision_free_processor_class("omdet-turbo")(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


BUILDERS = {"grounding-dino": build_grounding_dino, "mm-grounding-dino": build_mm_grounding_dino, "owlv2": build_owlv2,
            "owlvit": build_owlvit, "omdet-turbo": build_omdet_turbo}
