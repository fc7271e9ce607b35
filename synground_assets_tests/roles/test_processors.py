"""Processors where torchvision is missing: the family's own class, minus what needs torchvision."""

import pytest
import transformers.utils
from transformers import LlavaProcessor, Qwen2VLProcessor

from synground_assets.roles import hf_common
from synground_assets.roles.loading import ModelLoadError
from synground_assets.roles.processors import image_only, torchvision_free_processor_class


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
