"""Which grounding adapter a recipe's `grounding_model` names, loaded: `adapter: blip` (transformers'
BLIP-ITM, `grounding_blip.py`) or `adapter: albef` (ALBEF, `grounding_albef.py`; a folder written by
`python -m synground_assets.models.albef convert` or by fine-tuning)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from synground_assets.adapters.loading import ModelLoadError
from synground_assets.roles import catalog
from synground_assets.roles.spec import RoleSpec

# The catalog's rows (roles/catalog.py) are the one list of grounding adapters and their options.
GROUNDING_ADAPTERS = tuple(entry.name for entry in catalog.CATALOG if entry.role == "grounding_model")


def adapter_of_folder(model: str) -> str:
    """'albef' for a folder of this project's ALBEF format, else 'blip' (a hub id or a BLIP folder)."""
    from synground_assets.models.albef import is_albef_folder

    return "albef" if Path(model).is_dir() and is_albef_folder(model) else "blip"


def resolved_spec(spec: RoleSpec) -> RoleSpec:
    """The spec with its model's location resolved: a hub snapshot, a local folder or a `tiny:` build."""
    from synground_assets.adapters.hf_common import resolve_model

    return replace(spec, model=resolve_model(spec.model, "grounding_model", spec.revision).path)


def load_grounding_model(spec_or_path: RoleSpec | str | os.PathLike, device: str | torch.device | None = None,
                         remake: str | None = None):
    """A `GroundingModel` from a recipe's `grounding_model` spec, or from a hub id / local folder
    (the adapter then follows the folder's format). `device` overrides the spec's device. A model
    that cannot be loaded (a truncated `model.safetensors`, a bad config) raises `ModelLoadError`
    naming the folder and `remake`, what makes it again (e.g. the asset partition to rematerialize)."""
    if not isinstance(spec_or_path, RoleSpec):
        spec_or_path = RoleSpec(adapter=adapter_of_folder(str(spec_or_path)), model=str(spec_or_path))
    spec = spec_or_path
    if spec.adapter not in GROUNDING_ADAPTERS:
        raise ValueError(f"grounding model adapter {spec.adapter!r} is not available; expected one of "
                         f"{', '.join(GROUNDING_ADAPTERS)}")
    if not spec.model:
        raise ValueError("the grounding model spec names no model: set `model` to a hub id or a local folder")
    options = tuple(option.name for option in catalog.find("grounding_model", spec.adapter).options)
    unknown = set(spec.options) - set(options)
    if unknown:
        raise ValueError(f"grounding model options: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"expected {', '.join(options)}")
    try:
        return _from_pretrained(spec, str(device or spec.device))
    except (ModelLoadError, torch.cuda.OutOfMemoryError):
        raise  # already clear / not the model's fault
    except Exception as exc:  # safetensors' header error, a bad config.json, a missing weight: the folder is bad
        fix = remake or "check the folder or the hub id (a model written by save_pretrained)"
        raise ModelLoadError(f"grounding model {spec.model!r} ({spec.adapter}) cannot be loaded: "
                             f"{type(exc).__name__}: {exc}; {fix}") from exc


def _from_pretrained(spec: RoleSpec, device: str):
    if spec.adapter == "albef":
        from synground_assets.adapters.grounding_albef import AlbefGroundingModel

        return AlbefGroundingModel.from_pretrained(spec.model, spec.dtype, device, **spec.options)
    from synground_assets.adapters.grounding_blip import DEFAULT_MAX_TEXT_TOKENS, BlipGroundingModel

    return BlipGroundingModel.from_pretrained(
        spec.model, revision=spec.revision, dtype=spec.dtype, device=device,
        gradcam_layer=spec.options.get("gradcam_layer"),
        max_text_tokens=spec.options.get("max_text_tokens", DEFAULT_MAX_TEXT_TOKENS),
    )
