"""Tiny random-weight versions of every model class the pipeline uses, built offline.

Tests and the `tiny-*` recipes run the real `from_pretrained` + inference code of each adapter on
these: same classes, same processors and file layout as the hub checkpoints, but a few thousand
parameters, random weights (fixed seed) and tokenizers trained here on a small corpus, so nothing is
downloaded and every model builds in well under a second.

A recipe names a tiny model as `tiny:<name>` (for example `model: tiny:llava`); `hf_common`
resolves that reference at load time to `<cache>/<name>`, building the model first if needed. The
cache is `$SYNGROUND_TINY_MODELS`, else `~/.cache/synground/tiny`. Building is idempotent (a
finished model has a `.complete` marker) and atomic (built in a temporary folder, then renamed), so
parallel processes can ask for the same model.

    python -m synground_assets.roles.tiny [folder]     # build them all

Random weights produce arbitrary text, images and boxes: these models test the plumbing, never the
quality of the data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable

from PIL import Image

SEED = 0
IMAGE_SIZE = 32  # vision towers (LLaVA, BLIP)
DETECTOR_IMAGE_SIZE = 64
COMPLETE_MARKER = ".complete"

# Special tokens of the tiny causal LM and LLaVA tokenizers.
PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# A generic role-tagged chat template (Zephyr-like) for the tiny causal LM.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# LLaVA-1.5's template shape: "USER: <image>\n<text> ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Captions of the tiny photo set, COCO-captions style; keyed by the photo's file name.
PHOTO_CAPTIONS = {
    "grace_hopper.jpg": [
        "A woman in a dark naval uniform with medals poses for a portrait.",
        "An old photograph of a woman wearing a uniform and a white collar.",
    ],
    "china.jpg": [
        "A pagoda temple with red roofs among green trees.",
        "An old chinese building with a tiled roof under a blue sky.",
    ],
    "flower.jpg": [
        "A pink flower with yellow stamens in front of green leaves.",
        "A close up of a flower in bloom.",
    ],
}
PHOTO_SOURCES = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn.datasets", "images/china.jpg"),
    ("sklearn.datasets", "images/flower.jpg"),
)
PROCEDURAL_SCENES = (
    "a red circle to the left of a blue square",
    "a yellow triangle above a green diamond",
    "an orange square below a purple circle",
)


def cache_dir() -> Path:
    return Path(os.environ.get("SYNGROUND_TINY_MODELS") or Path.home() / ".cache" / "synground" / "tiny")


def _corpus() -> list[str]:
    """Text the tiny tokenizers are trained on: the concept vocabulary, captions and prompt words."""
    data = resources.files("synground_assets") / "data"
    words = [
        line.strip()
        for name in ("concepts.txt", "attributes.txt")
        for line in (data / name).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    captions = [c for caps in PHOTO_CAPTIONS.values() for c in caps] + list(PROCEDURAL_SCENES)
    prompt_words = (
        "Describe this image in detail. Write one detailed sentence describing a photo that shows "
        "these concepts. List the short noun phrases that name objects in this description, one per "
        "line. Summarise these captions of one photo into one detailed description. Concepts: "
        "Captions: Description: Phrases: the a an of in on with and next to near behind above below."
    )
    return words + captions + [prompt_words] * 3


# --- tokenizers -------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _word_level_json() -> str:
    """A word-level tokenizer over the corpus' words: generated text reads as words, not byte soup."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = sorted({w for text in _corpus() for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = {token: index for index, token in enumerate([PAD, BOS, EOS, UNK, IMAGE, *ROLE_TOKENS, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


def chat_tokenizer(chat_template: str = CHAT_TEMPLATE):
    """A word-level tokenizer with a chat template, for the tiny causal LM and LLaVA."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_word_level_json()),
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[IMAGE, *ROLE_TOKENS],
        chat_template=chat_template,
        model_max_length=2048,
    )
    return tokenizer


@lru_cache(maxsize=None)
def _clip_vocab_and_merges(vocab_size: int = 600) -> tuple[dict[str, int], list[str]]:
    """CLIP-style BPE (words end in '</w>'), trained here instead of downloaded."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    for char in alphabet:  # every byte must also exist as a word end, as in CLIP's own vocab
        vocab.setdefault(char + "</w>", len(vocab))
    # Special tokens last, as in CLIP: OWLv2 reads a query whose first token id is 0 as padding.
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges


def clip_tokenizer(model_max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


@lru_cache(maxsize=None)
def _wordpiece_vocab() -> tuple[str, ...]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()/&"))
    words = sorted({w.strip(".,:;!?\"'()").lower() for text in _corpus() for w in text.split()} - {""})
    return tuple(dict.fromkeys(specials + chars + ["##" + c for c in chars] + words))


def bert_tokenizer(**kwargs):
    from transformers import BertTokenizer

    vocab = {token: index for index, token in enumerate(_wordpiece_vocab())}
    return BertTokenizer(vocab=vocab, **kwargs)


# --- models -----------------------------------------------------------------------------------


def _llama_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        initializer_range=0.5,  # large random weights: the next token depends visibly on the prompt
    )


def _clip_vision_config(image_size: int = IMAGE_SIZE, patch_size: int = 8):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            image_size=image_size, patch_size=patch_size, projection_dim=32)


def build_causal_lm(folder: Path) -> None:
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer()
    model = LlamaForCausalLM(_llama_config(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_llava(folder: Path) -> None:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = chat_tokenizer()
    config = LlavaConfig(
        vision_config=_clip_vision_config(), text_config=_llama_config(tokenizer),
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
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    tokenizer = chat_tokenizer()
    pinpoints = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE]]
    config = LlavaNextConfig(
        vision_config=_clip_vision_config(), text_config=_llama_config(tokenizer),
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
    from transformers import (BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor,
                              BlipTextConfig, BlipVisionConfig)

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


def _tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config), tokenizer


def _stable_diffusion_pipeline(pipeline_class, safety_checker=None, feature_extractor=None, **unet_kwargs):
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
    text_encoder, tokenizer = _tiny_text_encoder()
    return pipeline_class(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                          safety_checker=safety_checker, feature_extractor=feature_extractor,
                          requires_safety_checker=safety_checker is not None)


def build_stable_diffusion(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    _stable_diffusion_pipeline(StableDiffusionPipeline).save_pretrained(folder)


def build_stable_diffusion_flagging(folder: Path) -> None:
    """Tiny Stable Diffusion with a real `StableDiffusionSafetyChecker` (tiny CLIP vision tower) whose
    concept thresholds are set to -2, below any cosine similarity: it flags every image, so the
    pipeline returns black images with `nsfw_content_detected` all True, as a real checker does
    when it fires. Nothing of the generator's output is faked: the pipeline's own check runs."""
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    import torch
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
    extractor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    _stable_diffusion_pipeline(StableDiffusionPipeline, checker, extractor).save_pretrained(folder)


def build_gligen(folder: Path) -> None:
    from diffusers import StableDiffusionGLIGENPipeline

    _stable_diffusion_pipeline(StableDiffusionGLIGENPipeline, attention_type="gated").save_pretrained(folder)


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


def build_owlv2(folder: Path) -> None:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    tokenizer = clip_tokenizer(model_max_length=16)
    text_config = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision_config = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         image_size=DETECTOR_IMAGE_SIZE, patch_size=8)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text_config, vision_config=vision_config,
                                                projection_dim=32, initializer_factor=0.1))
    size = {"height": DETECTOR_IMAGE_SIZE, "width": DETECTOR_IMAGE_SIZE}
    processor = Owlv2Processor(Owlv2ImageProcessorPil(size=size), tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_blip_itm_shapes(folder: Path) -> None:
    """The random-init BLIP-ITM that the shapes recipe fine-tunes (`roles/grounding_blip.py`)."""
    from synground_assets.roles.grounding_blip import build_tiny_blip

    build_tiny_blip(folder)


def build_albef_shapes(folder: Path) -> None:
    """A random-init ALBEF with the shapes vocabulary (`roles/grounding_albef.py`), the ALBEF peer of
    blip-itm-shapes."""
    from synground_assets.roles.grounding_albef import build_tiny_albef

    build_tiny_albef(folder)


def build_photos(folder: Path) -> None:
    """A few real photographs that ship inside installed wheels (matplotlib, scikit-learn), shrunk,
    with COCO-captions-style `captions.json`; procedural scenes stand in for any that are absent."""
    from synground_assets.roles.shapes import ShapesImageGenerator

    images, annotations = [], []

    def add(image: Image.Image, file_name: str, captions: list[str]) -> None:
        image = image.convert("RGB")
        image.thumbnail((128, 128))
        image.save(folder / file_name, quality=90)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": image.width, "height": image.height})
        first_id = len(annotations) + 1
        annotations.extend({"id": first_id + i, "image_id": image_id, "caption": c} for i, c in enumerate(captions))

    for package, relative in PHOTO_SOURCES:
        try:
            path = resources.files(package) / relative
            with path.open("rb") as handle:
                photo = Image.open(handle)
                photo.load()
        except (ModuleNotFoundError, FileNotFoundError, OSError):
            continue
        add(photo, Path(relative).name, PHOTO_CAPTIONS[Path(relative).name])
    if not images:
        renderer = ShapesImageGenerator(size=96)
        for index, scene in enumerate(PROCEDURAL_SCENES):
            add(renderer.render(scene, seed=index).image, f"scene_{index}.jpg", [scene.capitalize() + "."])
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}, indent=1))


BUILDERS: dict[str, Callable[[Path], None]] = {
    "causal-lm": build_causal_lm,
    "llava": build_llava,
    "llava-next": build_llava_next,
    "blip-captioning": build_blip_captioning,
    "stable-diffusion": build_stable_diffusion,
    "stable-diffusion-flagging": build_stable_diffusion_flagging,
    "gligen": build_gligen,
    "grounding-dino": build_grounding_dino,
    "mm-grounding-dino": build_mm_grounding_dino,
    "owlv2": build_owlv2,
    "blip-itm-shapes": build_blip_itm_shapes,
    "albef-shapes": build_albef_shapes,
    "photos": build_photos,
}


def ensure_tiny(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of tiny model `name`, built first if it is not there yet."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {', '.join(BUILDERS)}")
    root = Path(root) if root is not None else cache_dir()
    folder = root / name
    if (folder / COMPLETE_MARKER).exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    staging.chmod(0o755)
    try:
        import torch

        torch.manual_seed(SEED)
        BUILDERS[name](staging)
        (staging / COMPLETE_MARKER).write_text("built by synground_assets.roles.tiny\n")
        if folder.exists():  # an unfinished build from a crashed process
            shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another process published it first
            if not (folder / COMPLETE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_all(root: str | os.PathLike | None = None) -> dict[str, Path]:
    return {name: ensure_tiny(name, root) for name in BUILDERS}


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print("usage: python -m synground_assets.roles.tiny [folder]   (default: $SYNGROUND_TINY_MODELS or "
              "~/.cache/synground/tiny)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    for name, folder in build_all(argv[0] if argv else None).items():
        print(f"{name:20s} {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
