"""Processors where torchvision is missing: the family's own class, minus what needs torchvision."""

import json
import shutil

import pytest
import transformers.utils
from PIL import Image
from transformers import LlavaProcessor, Qwen2VLProcessor

from synground_assets.adapters import hf_common
from synground_assets.adapters.loading import ModelLoadError
from synground_assets.models.processors import image_only, torchvision_free_processor_class


def test_image_only_keeps_the_family_name_and_drops_the_video_processor():
    processor_class = image_only(Qwen2VLProcessor)
    assert issubclass(processor_class, Qwen2VLProcessor) and processor_class.__name__ == "Qwen2VLProcessor"
    assert processor_class.get_attributes() == ["image_processor", "tokenizer"]
    assert image_only(Qwen2VLProcessor) is processor_class  # one class per family


def test_a_processor_without_video_is_its_own_class():
    assert image_only(LlavaProcessor) is LlavaProcessor


def test_the_class_comes_from_its_module_not_the_torchvision_placeholder():
    from transformers.models.omdet_turbo.processing_omdet_turbo import OmDetTurboProcessor

    assert torchvision_free_processor_class("omdet-turbo") is OmDetTurboProcessor
    assert torchvision_free_processor_class("no-such-family") is None


@pytest.mark.parametrize("name, model_type", [("qwen2-vl", "qwen2_vl"), ("omdet-turbo", "omdet-turbo")])
def test_with_torchvision_a_failing_auto_processor_is_named(tiny_models, monkeypatch, name, model_type):
    """The fallback is for installs without torchvision only: with it, AutoProcessor's error stands."""
    if transformers.utils.is_torchvision_available():
        pytest.skip("torchvision is installed: AutoProcessor loads these folders itself")
    location = hf_common.resolve_model(f"tiny:{name}", "describer")
    assert hf_common.load_processor(location, model_type, "describer").__class__.__name__.endswith("Processor")
    monkeypatch.setattr(transformers.utils, "is_torchvision_available", lambda: True)
    with pytest.raises(ModelLoadError, match=f"role 'describer': cannot load the processor of 'tiny:{name}'"):
        hf_common.load_processor(location, model_type, "describer")


def test_a_folder_in_the_hubs_older_layout_loads_too(tiny_models, tmp_path):
    """Qwen2-VL checkpoints saved before processor_config.json: the image processor's settings in
    preprocessor_config.json, the pixel range as min_pixels / max_pixels."""
    folder = tmp_path / "qwen2-vl"
    shutil.copytree(tiny_models["qwen2-vl"], folder)
    (folder / "processor_config.json").unlink()
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 32 * 32, "max_pixels": 48 * 48, "patch_size": 8, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}))
    processor = hf_common.load_processor(hf_common.resolve_model(str(folder), "describer"), "qwen2_vl", "describer")
    assert isinstance(processor, Qwen2VLProcessor) and processor.chat_template
    inputs = processor(images=[[Image.new("RGB", (96, 48))]], text=["<|vision_start|><|image_pad|><|vision_end|>"],
                       return_tensors="pt")
    # 96 x 48 pixels are over max_pixels: scaled to 64 x 32, multiples of 16 (patch 8, merge 2), 4 x 8 patches.
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 8]]


def test_a_processor_that_loads_neither_way_is_named(tiny_models, tmp_path):
    folder = tmp_path / "qwen2-vl"
    shutil.copytree(tiny_models["qwen2-vl"], folder)
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    location = hf_common.resolve_model(str(folder), "describer")
    with pytest.raises(ModelLoadError, match=f"role 'describer': cannot load the processor of '{folder}'") as error:
        hf_common.load_processor(location, "qwen2_vl", "describer")
    if not transformers.utils.is_torchvision_available():
        assert "without torchvision, Qwen2VLProcessor failed too" in str(error.value)
