"""Issue 11, item 2: every adapter name and option of a recipe is checked when the file loads,
against the adapter's declared options (name, type, range), before any asset runs."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synground_assets.config.recipes import RecipeError, load_recipe_book
from synground_assets.roles import catalog
from synground_assets.roles.base import FILTER_ROLE_PROTOCOLS, ROLE_PROTOCOLS
from synground_assets.roles.spec import RoleSpec

ROLES = {
    "concepts": "{adapter: shapes}", "describer": "{adapter: shapes}", "image_generator": "{adapter: shapes}",
    "phrase_extractor": "{adapter: shapes}", "detector": "{adapter: shapes}",
}


def book(tmp_path: Path, extra: str = "", **roles: str) -> Path:
    lines = "\n".join(f"      {role}: {spec}" for role, spec in {**ROLES, **roles}.items())
    path = tmp_path / "recipes.yaml"
    path.write_text(f"recipes:\n  mine:\n    description_source: concept2text\n{extra}    roles:\n{lines}\n")
    return path


@pytest.mark.parametrize("roles, message", [
    ({"detector": "{adapter: yolo}"},
     "role 'detector', field 'adapter': expected one of glip, shapes, zero-shot-detector, got 'yolo'"),
    ({"detector": "{adapter: glip, model: 'tiny:glip', options: {text_threshold: 0.25}}"},
     "role 'detector', option 'text_threshold': unknown option"),
    ({"image_generator": "{adapter: shapes, options: {size: -64}}"},
     "role 'image_generator', option 'size': expected an integer >= 32, got -64"),
    ({"image_generator": "{adapter: shapes, options: {sise: 64}}"},
     "role 'image_generator', option 'sise': unknown option (did you mean 'size'?)"),
    ({"concepts": "{adapter: shapes, options: {max_objects: 2.5}}"},
     "role 'concepts', option 'max_objects': expected an integer in [1, 24], got 2.5"),
    ({"detector": "{adapter: zero-shot-detector, model: 'tiny:owlv2', options: {box_threshold: 1.5}}"},
     "role 'detector', option 'box_threshold': expected a number in [0, 1], got 1.5"),
    ({"detector": "{adapter: zero-shot-detector, options: {top_k: 1}}"},
     "role 'detector', field 'model': expected a hub id, a local folder or tiny:<name>, got nothing"),
    ({"image_generator": "{adapter: diffusers, model: x/y, options: {height: 500}}"},
     "option 'height': expected an integer multiple of 8 >= 8, got 500"),
    ({"image_generator": "{adapter: diffusers, model: x/y, options: {use_resolution_binning: 'no'}}"},
     "role 'image_generator', option 'use_resolution_binning': expected true or false, got 'no'"),
    ({"image_generator": "{adapter: diffusers, model: x/y, options: {complex_human_instruction: 'none'}}"},
     "role 'image_generator', option 'complex_human_instruction': expected a list, got 'none'"),
    ({"describer": "{adapter: llm-concept2text, model: x/y, options: {do_sample: 'yes'}}"},
     "role 'describer', option 'do_sample': expected true or false, got 'yes'"),
    ({"concepts": "{adapter: image-folder}"},
     "role 'concepts', option 'images': expected a string (required), got nothing"),
    ({"phrase_extractor": "{adapter: noun-phrases, options: {max_words: 0}}"},
     "role 'phrase_extractor', option 'max_words': expected an integer in [1, 16], got 0"),
])
def test_a_bad_adapter_or_option_names_file_recipe_role_option_and_expected_value(tmp_path, roles, message):
    path = book(tmp_path, **roles)
    with pytest.raises(RecipeError) as error:
        load_recipe_book(path)
    assert str(error.value).startswith(f"{path}: recipe 'mine', ")
    assert message in str(error.value)


def test_the_grounding_model_is_checked_too(tmp_path):
    path = book(tmp_path, extra="    grounding_model: {adapter: blip, model: x/y, options: {gradcam_layer: -1}}\n")
    with pytest.raises(RecipeError, match="role 'grounding_model', option 'gradcam_layer': expected an integer >= 0"):
        load_recipe_book(path)
    path = book(tmp_path, extra="    grounding_model: {adapter: clip, model: x/y}\n")
    with pytest.raises(
        RecipeError, match="role 'grounding_model', field 'adapter': expected one of albef, blip, got 'clip'"
    ):
        load_recipe_book(path)


def test_every_adapter_takes_exactly_the_options_of_its_catalog_row():
    """The table (imported without torch) and the adapters agree: a model-backed adapter finds and
    checks its own row; a keyword adapter's signature is its row's options."""
    import importlib

    for entry in catalog.CATALOG:
        module, name = entry.factory.split(":")
        factory = getattr(importlib.import_module(module), name)
        declared = {option.name for option in entry.options}
        if entry.role == "grounding_model":
            continue  # below: adapters/grounding.py loads them
        protocol = {**ROLE_PROTOCOLS, **FILTER_ROLE_PROTOCOLS}[entry.role]
        assert protocol in factory.__mro__, f"{entry.factory} does not declare its role"
        if entry.takes_spec:
            assert catalog.entry_of(factory) is entry, entry.factory
        else:
            assert declared == set(inspect.signature(factory).parameters), entry.factory
    from synground_assets.adapters import grounding

    grounding_rows = [entry for entry in catalog.CATALOG if entry.role == "grounding_model"]
    assert {entry.name for entry in grounding_rows} == set(grounding.GROUNDING_ADAPTERS)
    for entry in grounding_rows:  # the loader checks options against the catalog's row, not a list of its own
        with pytest.raises(ValueError, match="unknown key") as error:
            grounding.load_grounding_model(RoleSpec(adapter=entry.name, model="x", options={"nope": 1}))
        assert str(error.value).endswith(f"expected {', '.join(option.name for option in entry.options)}")


def test_loading_and_checking_recipes_imports_no_model_library():
    code = ("import sys; from synground_assets.config.recipes import load_recipe_book; load_recipe_book(); "
            "print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "[]"


def test_dagster_definitions_validate_fails_on_a_bad_option(tmp_path):
    builtin = (Path(__file__).parents[1] / "synground_assets" / "config" / "recipes.yaml").read_text()
    broken = tmp_path / "recipes.yaml"
    broken.write_text(builtin.replace("options: {size: 128}", "options: {size: -128}", 1))
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run([str(dagster), "definitions", "validate", "-m", "synground_assets.definitions"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "SYNGROUND_RECIPES": str(broken), "DAGSTER_HOME": str(tmp_path),
                                 "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode != 0
    assert (f"{broken}: recipe 'shapes', role 'image_generator', option 'size': expected an integer >= 32, got -128"
            in result.stdout + result.stderr)


@pytest.mark.parametrize("training, message", [
    ("{gradcam_layer: 3}", "field training.gradcam_layer must be in [2, 2] for '{model}' (4 text layers; not the "
                           "last, whose gradient vanishes off [CLS]) but is 3"),
    ("{image_size: 60}", "field training.image_size must be a multiple of '{model}''s patch size 8 (a whole patch "
                         "grid) but is 60"),
    ("{eval_resolution: 36}", "training.eval_resolution must be a multiple of '{model}''s patch size 8"),
    ("{max_text_tokens: 65}", "field training.max_text_tokens must be at most '{model}''s 64 text positions but is 65"),
])
def test_a_training_setting_the_albef_folder_cannot_train_with_is_refused_when_the_recipe_loads(
        tmp_path, training, message):
    from synground_assets.tiny.grounding import build_tiny_albef

    model = build_tiny_albef(tmp_path / "albef", text_layers=4, fusion_layer=2, patch_size=8)
    extra = f"    grounding_model: {{adapter: albef, model: '{model}'}}\n    training: {training}\n"
    with pytest.raises(RecipeError) as error:
        load_recipe_book(book(tmp_path, extra))
    assert message.format(model=model) in str(error.value)
    assert str(tmp_path / "recipes.yaml") in str(error.value) and "recipe 'mine'" in str(error.value)


def test_a_blip_config_json_leaving_out_defaults_is_checked_with_transformers_defaults(tmp_path):
    folder = tmp_path / "blip"
    folder.mkdir()
    # As transformers writes it: only what differs from BlipTextConfig / BlipVisionConfig defaults.
    (folder / "config.json").write_text('{"model_type": "blip", "text_config": {"max_position_embeddings": 32}, '
                                        '"vision_config": {"image_size": 64}}')
    ok = f"    grounding_model: {{adapter: blip, model: '{folder}'}}\n    training: {{gradcam_layer: 10}}\n"
    assert load_recipe_book(book(tmp_path, ok)).get("mine").training.config.gradcam_layer == 10
    for training, message in (("{gradcam_layer: 11}", "gradcam_layer must be in [0, 10]"),
                              ("{image_size: 40}", "patch size 16"),
                              ("{max_text_tokens: 33}", "32 text positions")):
        extra = f"    grounding_model: {{adapter: blip, model: '{folder}'}}\n    training: {training}\n"
        with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_recipe_book(book(tmp_path, extra))


def test_a_model_not_on_this_machine_is_left_to_the_check_before_training(tmp_path):
    extra = "    grounding_model: {adapter: albef, model: 'tiny:albef-shapes'}\n    training: {gradcam_layer: 3}\n"
    assert load_recipe_book(book(tmp_path, extra)).get("mine").training.config.gradcam_layer == 3
