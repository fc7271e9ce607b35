"""Processors where torchvision is missing.

The CPU torch wheel this project installs has no matching torchvision build on PyPI (the PyPI
torchvision wheels link CUDA torch's libraries), and transformers then hides some processor classes
or cannot build their video processor, so `AutoProcessor` fails for Qwen2-VL, Qwen2.5-VL (their
video processors need torchvision) and OmDet-Turbo (its post-processing uses torchvision's NMS).
The family's own processor class still imports from its module; `torchvision_free_processor_class`
returns it, without the video processor. The adapters give processors images and text only, and
the detector scores OmDet-Turbo's boxes itself, so nothing they call needs torchvision.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from synground_assets.roles.spec import ModelLoadError


@lru_cache(maxsize=None)
def image_only(processor_class: type) -> type:
    """`processor_class` without its video processor: a subclass of the same name (so a processor it
    saves reads as the family's own), the same image-token expansion and chat template, taking
    images and text only. A class without a video processor is returned as it is."""
    attributes = processor_class.get_attributes()
    if "video_processor" not in attributes:
        return processor_class
    if set(attributes) != {"image_processor", "tokenizer", "video_processor"}:
        raise ModelLoadError(f"{processor_class.__name__} takes {', '.join(attributes)}; only an image processor, "
                             "a tokenizer and a video processor can be loaded without torchvision")

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(self, image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                 chat_template=chat_template, **kwargs)

    return type(processor_class.__name__, (processor_class,), {
        "__init__": __init__, "__module__": __name__,
        "__doc__": f"{processor_class.__name__} for images and text (no video processor: torchvision is missing)."})


def torchvision_free_processor_class(model_type: str) -> type | None:
    """The processor class of a model family, imported from its own module (the top-level name is a
    placeholder when the class declares torchvision), without a video processor; None if unknown."""
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    class_name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if not isinstance(class_name, str):
        return None
    module_name = model_type_to_module_name(model_type)
    try:
        module = importlib.import_module(f"transformers.models.{module_name}.processing_{module_name}")
    except ImportError:
        return None
    processor_class = getattr(module, class_name, None)
    return image_only(processor_class) if isinstance(processor_class, type) else None
