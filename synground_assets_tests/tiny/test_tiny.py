"""The tiny-model builder: offline, fast, idempotent, and the real classes."""

import json
import subprocess
import sys
import time

import pytest

from synground_assets import tiny


def test_every_model_is_built_with_a_complete_marker(tiny_models):
    assert set(tiny_models) == set(tiny.BUILDERS)
    assert "stable-diffusion-flagging" in tiny.BUILDERS  # registered by the tests, not shipped
    assert "stable-diffusion-flagging" not in tiny.diffusion.BUILDERS
    for name, folder in tiny_models.items():
        assert (folder / tiny.COMPLETE_MARKER).is_file(), name


@pytest.mark.parametrize("name, config_file, key, value", [
    ("causal-lm", "config.json", "model_type", "llama"),
    ("llava", "config.json", "model_type", "llava"),
    ("llava-next", "config.json", "model_type", "llava_next"),
    ("blip-captioning", "config.json", "model_type", "blip"),
    ("grounding-dino", "config.json", "model_type", "grounding-dino"),
    ("mm-grounding-dino", "config.json", "model_type", "mm-grounding-dino"),
    ("owlv2", "config.json", "model_type", "owlv2"),
    ("blip-itm-shapes", "config.json", "model_type", "blip"),
    ("stable-diffusion", "model_index.json", "_class_name", "StableDiffusionPipeline"),
    ("gligen", "model_index.json", "_class_name", "StableDiffusionGLIGENPipeline"),
    ("owlvit", "config.json", "model_type", "owlvit"),
    ("stable-diffusion-xl", "model_index.json", "_class_name", "StableDiffusionXLPipeline"),
    ("stable-diffusion-3", "model_index.json", "_class_name", "StableDiffusion3Pipeline"),
    ("flux", "model_index.json", "_class_name", "FluxPipeline"),
    ("pixart-sigma", "model_index.json", "_class_name", "PixArtSigmaPipeline"),
    ("sana", "model_index.json", "_class_name", "SanaPipeline"),
    ("sana", "vae/config.json", "_class_name", "AutoencoderDC"),
    ("sana", "text_encoder/config.json", "model_type", "gemma2"),
    ("idefics3", "config.json", "model_type", "idefics3"),
    ("qwen2-vl", "config.json", "model_type", "qwen2_vl"),
    ("qwen2-vl", "processor_config.json", "processor_class", "Qwen2VLProcessor"),
    ("qwen2.5-vl", "config.json", "model_type", "qwen2_5_vl"),
    ("qwen2.5-vl", "processor_config.json", "processor_class", "Qwen2_5_VLProcessor"),
    ("omdet-turbo", "config.json", "model_type", "omdet-turbo"),
    ("omdet-turbo", "processor_config.json", "processor_class", "OmDetTurboProcessor"),
    ("glip", "config.json", "model_type", "glip"),
    ("glip", "tokenizer_config.json", "tokenizer_class", "BertTokenizer"),
])
def test_models_are_the_real_classes(tiny_models, name, config_file, key, value):
    assert json.loads((tiny_models[name] / config_file).read_text())[key] == value


def test_building_again_is_a_no_op(tiny_models):
    folder = tiny_models["owlv2"]
    before = (folder / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert tiny.ensure_tiny("owlv2") == folder
    assert time.perf_counter() - started < 0.1
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_build_is_deterministic(tiny_models, tmp_path):
    rebuilt = tiny.ensure_tiny("causal-lm", tmp_path)
    assert (rebuilt / "model.safetensors").read_bytes() == (tiny_models["causal-lm"] / "model.safetensors").read_bytes()


def test_an_unfinished_build_is_replaced(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "half-written.jpg").write_bytes(b"")
    folder = tiny.ensure_tiny("photos", tmp_path)
    assert (folder / tiny.COMPLETE_MARKER).is_file() and not (folder / "half-written.jpg").exists()


def test_photos_come_with_coco_style_captions(tiny_models):
    data = json.loads((tiny_models["photos"] / "captions.json").read_text())
    assert data["images"] and data["annotations"]
    ids = {image["id"] for image in data["images"]}
    assert all(a["image_id"] in ids and a["caption"] for a in data["annotations"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    assert all((tiny_models["photos"] / image["file_name"]).is_file() for image in data["images"])


def test_causal_lm_tokenizer_has_a_chat_template(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["causal-lm"])
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "a dog"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<|user|>\na dog</s>\n<|assistant|>\n"


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="tiny model 'owlv2' is already registered"):
        tiny.register("owlv2", lambda folder: None)


def test_unknown_name_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model 'nope'"):
        tiny.ensure_tiny("nope", tmp_path)


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "synground_assets.tiny", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "usage" in result.stdout


def test_the_cache_gets_the_umask_permissions_not_safetensors_0600(tmp_path):
    """Issue 30 (minor): the tiny-model cache stayed 0600, unreadable by the other users of a machine."""
    import os

    previous = os.umask(0o022)
    try:
        folder = tiny.ensure_tiny("causal-lm", tmp_path)
    finally:
        os.umask(previous)
    assert (folder / "model.safetensors").is_file()
    found = {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in [folder, *folder.rglob("*")]}
    assert found == {("dir", 0o755), ("file", 0o644)}
