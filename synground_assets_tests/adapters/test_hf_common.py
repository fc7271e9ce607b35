"""Model loading fails early and clearly: before any item is processed, naming the model and the fix."""

import subprocess
import sys

import pytest
import torch

from synground_assets import tiny
from synground_assets.adapters import hf_common
from synground_assets.adapters.build import build_role
from synground_assets.adapters.loading import ModelLoadError, resolve_device
from synground_assets.config.recipes import RecipeError, RoleSpec, load_recipe_book


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_asked_for_and_absent_is_a_clear_error(tiny_models):
    with pytest.raises(ModelLoadError, match="device 'cuda' was asked for but no CUDA GPU"):
        build_role("detector", RoleSpec("zero-shot-detector", "tiny:grounding-dino", device="cuda"))


def test_auto_device_falls_back_to_cpu_without_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_missing_model_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=f"model folder '{missing}' does not exist"):
        build_role("describer", RoleSpec("image-captioner", str(missing), device="cpu"))


def test_folder_without_config_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        build_role("phrase_extractor", RoleSpec("llm-phrases", str(tmp_path), device="cpu"))


def test_missing_model_reference_is_named():
    with pytest.raises(ModelLoadError, match="needs a model"):
        build_role("detector", RoleSpec("zero-shot-detector", None, device="cpu"))


@pytest.mark.parametrize("role, adapter, model, kind", [
    ("detector", "zero-shot-detector", "tiny:causal-lm", "llama"),
    ("describer", "image-captioner", "tiny:owlv2", "owlv2"),
    ("image_generator", "diffusers", "tiny:gligen", "StableDiffusionGLIGENPipeline"),
    ("image_generator", "gligen", "tiny:stable-diffusion", "StableDiffusionPipeline"),
    ("phrase_extractor", "llm-phrases", "tiny:grounding-dino", "grounding-dino"),
])
def test_architecture_the_adapter_cannot_run_is_named(tiny_models, role, adapter, model, kind):
    with pytest.raises(ModelLoadError, match=f"is a '{kind}', which this adapter cannot run; expected one of"):
        build_role(role, RoleSpec(adapter, model, device="cpu"))


def test_unknown_tiny_model_lists_the_known_ones():
    with pytest.raises(ModelLoadError, match="unknown tiny model 'tiny:nope'.*causal-lm"):
        hf_common.resolve_model("tiny:nope", "describer")


def test_offline_hub_id_not_in_cache_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set and 'someone/some-model'.*not in the local"):
        hf_common.resolve_model("someone/some-model", "describer")


def test_unknown_option_is_named(tiny_models):
    with pytest.raises(ModelLoadError, match="option 'box_treshold': unknown option"):
        build_role("detector", RoleSpec("zero-shot-detector", "tiny:owlv2", device="cpu",
                                        options={"box_treshold": 0.3}))


def test_bad_setting_is_named_at_construction(tiny_models):
    with pytest.raises(ModelLoadError, match="option 'height': expected an integer multiple of 8 >= 8, got 60"):
        build_role("image_generator", RoleSpec("diffusers", "tiny:stable-diffusion", device="cpu",
                                               options={"height": 60}))
    with pytest.raises(ModelLoadError, match="option 'top_k': expected an integer >= 1, got 0"):
        build_role("detector", RoleSpec("zero-shot-detector", "tiny:owlv2", device="cpu", options={"top_k": 0}))


def test_model_load_error_is_a_recipe_error():
    assert issubclass(ModelLoadError, RecipeError)


@pytest.mark.parametrize("recipe", ["tiny-image2text", "tiny-concept2text", "tiny-text2text", "tiny-gligen",
                                    "tiny-glip"])
def test_tiny_recipes_build_every_role(tiny_models, recipe):
    book = load_recipe_book()
    spec = book.get(recipe)
    roles = {role: build_role(role, role_spec, recipe) for role, role_spec in spec.roles.items()}
    assert all(role.info.adapter for role in roles.values())
    for role in roles.values():
        if hasattr(role, "release"):
            role.release()


@pytest.mark.parametrize("name", ["paper-image2text", "paper-concept2text", "paper-gligen", "paper-image2text-gdino",
                                  "modern-image2text", "fast-concept2text", "turbo-concept2text"])
def test_real_model_recipes_name_real_checkpoints_on_gpu(name):
    recipe = load_recipe_book().get(name)
    assert recipe.needs_gpu and recipe.notes
    models = [spec.model for spec in recipe.roles.values() if spec.model]
    assert models and not any(m.startswith(tiny.PREFIX) for m in models)
    assert all(spec.device == "cuda" for spec in recipe.roles.values() if spec.model)


def test_release_drops_the_model(tiny_models):
    detector = build_role("detector", RoleSpec("zero-shot-detector", "tiny:owlv2", device="cpu"))
    detector.release()
    assert detector.model is None


def test_tiny_reference_resolves_into_the_cache(tiny_models):
    location = hf_common.resolve_model("tiny:owlv2", "detector")
    assert location.is_local and location.path == str(tiny.cache_dir() / "owlv2")


def test_the_turbo_rows_draw_in_few_steps():
    book = load_recipe_book()
    for name in ("fast-concept2text", "turbo-concept2text", "modern-image2text"):  # distilled generators
        assert book.get(name).roles["image_generator"].options["num_inference_steps"] <= 4


def test_a_package_reference_names_an_installed_package_and_its_file(tmp_path):
    with pytest.raises(ModelLoadError, match="model package 'no_such_model_package' is not installed"):
        hf_common.resolve_model("package:no_such_model_package", "describer")
    with pytest.raises(ModelLoadError, match="package 'synground_assets' .* has no model.gguf"):
        hf_common.resolve_model("package:synground_assets", "describer", required_file="model.gguf")
    location = hf_common.resolve_model("package:synground_assets", "describer", required_file="definitions.py")
    assert location.is_local and location.path.endswith("synground_assets")


@pytest.mark.parametrize("reference, message", [
    ("package:../../etc", r"'\.\./\.\./etc' is not a Python package name; expected package:<package>"),
    ("package:/etc", "is not a Python package name"),
    ("package:a..b", "is not a Python package name"),
    ("package:", "is not a Python package name"),
    ("package:os", r"'os' is an installed module \(.*\), not a package folder that ships a model file"),
    ("package:synground_assets.nope", "model package 'synground_assets.nope' is not installed"),
])
def test_a_package_reference_is_checked_before_any_import(reference, message):
    """Issue 30, item 9: `../../etc` gave a raw ImportError and `os` was "not installed"."""
    with pytest.raises(ModelLoadError, match=message):
        hf_common.resolve_model(reference, "describer")


def test_a_dotted_package_reference_imports_no_parent_package():
    """Issue 30, item 9: `package:this.x` imported `this` (which prints the Zen of Python), against
    the docstring's "found without importing the package"."""
    code = ("import sys\nfrom synground_assets.adapters import hf_common\n"
            "from synground_assets.adapters.loading import ModelLoadError\n"
            "try:\n    hf_common.resolve_model('package:this.x', 'describer')\n"
            "except ModelLoadError as exc:\n    print('ERROR', exc)\nprint('IMPORTED', 'this' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "IMPORTED False" in result.stdout and "Zen of Python" not in result.stdout, result.stdout
    assert "model package 'this.x' is not installed" in result.stdout


def test_a_dotted_package_reference_finds_the_subpackage_folder():
    location = hf_common.resolve_model("package:synground_assets.data", "describer", required_file="concepts.txt")
    assert location.path.endswith("synground_assets/data")
