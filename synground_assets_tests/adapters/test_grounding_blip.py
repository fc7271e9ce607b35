"""The BLIP grounding adapter and the tiny offline BLIP: loading, shapes, the cross-attention seam."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from synground_assets.adapters.grounding import load_grounding_model
from synground_assets.adapters.grounding_blip import BlipGroundingModel
from synground_assets.config.recipes import RoleSpec
from synground_assets.tiny.grounding import build_tiny_blip, shapes_vocabulary
from synground_assets.tiny.shapes import ShapesImageGenerator


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"), image_size=64, patch_size=8, seed=0)


@pytest.fixture
def model(folder):
    return BlipGroundingModel.from_pretrained(folder).eval()


def two_images():
    generator = ShapesImageGenerator(64)
    return [generator.render("a red circle and a blue square", 1).image,
            generator.render("a green triangle above a yellow diamond", 2).image]


def test_tiny_blip_is_saved_as_safetensors_with_its_processor(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json"} <= names


def test_tokenizer_knows_every_shapes_word_and_config_uses_its_ids(model):
    tokenizer = model.processor.tokenizer
    ids = tokenizer(["An orange diamond to the left of a purple triangle."])["input_ids"][0]
    assert tokenizer.unk_token_id not in ids
    text_config = model.model.config.text_config
    assert text_config.vocab_size == len(shapes_vocabulary())
    assert (text_config.pad_token_id, text_config.bos_token_id, text_config.sep_token_id) == (
        tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_vision_tower_sees_the_image(model):
    inputs = model.preprocess(two_images(), ["a red circle", "a red circle"])
    embeds = model.encode_image(inputs.pixel_values)
    assert embeds.shape == (2, 1 + 8 * 8, 64)
    # initializer_range=0.02: a default (1e-10) vision tower would give identical outputs here.
    assert (embeds[0] - embeds[1]).abs().max() > 1e-2


def test_itm_logits_and_captured_cross_attention_shapes(model):
    inputs = model.preprocess(two_images(), ["a red circle", "a green triangle above a yellow diamond"])
    embeds = model.encode_image(inputs.pixel_values)
    logits, attention = model.itm_logits(embeds, inputs.input_ids, inputs.attention_mask, capture_layer=1)
    batch, tokens = inputs.input_ids.shape
    assert logits.shape == (2, 2)
    heads = model.model.config.text_config.num_attention_heads
    assert attention.shape == (batch, heads, tokens, 1 + 64)
    assert attention.requires_grad
    torch.testing.assert_close(attention.sum(-1), torch.ones(batch, heads, tokens))
    # Without a capture layer nothing is captured and the logits are the same.
    again, none = model.itm_logits(embeds, inputs.input_ids, inputs.attention_mask)
    assert none is None
    torch.testing.assert_close(again, logits)


def test_contrastive_features_are_unit_vectors(model):
    inputs = model.preprocess(two_images(), ["a red circle", "a blue square"])
    image_feat, text_feat = model.contrastive_features(
        model.encode_image(inputs.pixel_values), inputs.input_ids, inputs.attention_mask)
    torch.testing.assert_close(image_feat.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text_feat.norm(dim=-1), torch.ones(2))


def test_text_is_truncated_to_max_text_tokens(model):
    model.max_text_tokens = 6
    inputs = model.preprocess(two_images()[:1], ["a red circle to the left of a blue square and more"])
    assert inputs.input_ids.shape == (1, 6)


def test_other_resolution_changes_the_patch_grid(model):
    inputs = model.preprocess(two_images(), ["a red circle", "a blue square"], resolution=96)
    assert inputs.pixel_values.shape[-2:] == (96, 96)
    assert model.patch_grid(96) == (12, 12)
    assert model.encode_image(inputs.pixel_values).shape[1] == 1 + 12 * 12
    with pytest.raises(ValueError, match="divisible by the patch size 8"):
        model.preprocess(two_images(), ["a", "b"], resolution=100)


def test_gradcam_layer_defaults_to_a_middle_layer_and_rejects_the_last(folder):
    model = BlipGroundingModel.from_pretrained(folder)
    layers = model.model.config.text_config.num_hidden_layers
    assert 0 <= model.gradcam_layer < layers - 1
    with pytest.raises(ValueError, match="gradcam_layer"):
        BlipGroundingModel.from_pretrained(folder, gradcam_layer=layers - 1)


def test_save_and_reload_give_the_same_logits(model, tmp_path):
    images = two_images()
    inputs = model.preprocess(images, ["a red circle", "a blue square"])
    before = model.itm_logits(model.encode_image(inputs.pixel_values), inputs.input_ids, inputs.attention_mask)[0]
    model.save_pretrained(tmp_path / "copy")
    again = load_grounding_model(tmp_path / "copy", device="cpu").eval()
    inputs = again.preprocess(images, ["a red circle", "a blue square"])
    after = again.itm_logits(again.encode_image(inputs.pixel_values), inputs.input_ids, inputs.attention_mask)[0]
    torch.testing.assert_close(before, after)


def test_load_grounding_model_from_a_recipe_spec(folder):
    spec = RoleSpec(adapter="blip", model=str(folder), dtype="float32", device="cpu",
                    options={"gradcam_layer": 0, "max_text_tokens": 12})
    model = load_grounding_model(spec)
    assert (model.gradcam_layer, model.max_text_tokens, model.device.type) == (0, 12, "cpu")
    assert model.info.model_id == str(folder)


@pytest.mark.parametrize(
    "spec, message",
    [
        (RoleSpec(adapter="clip", model="x"), "expected one of blip, albef"),
        (RoleSpec(adapter="blip"), "names no model"),
        (RoleSpec(adapter="blip", model="x", options={"layer": 3}), "unknown key"),
    ],
)
def test_load_grounding_model_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        load_grounding_model(spec)


def test_preprocess_checks_lengths(model):
    with pytest.raises(ValueError, match="2 images but 1 phrases"):
        model.preprocess([Image.new("RGB", (64, 64))] * 2, ["a red circle"])
