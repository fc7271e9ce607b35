"""The ALBEF grounding adapter: the protocol's shapes, its inputs, the recipe seam, and the
training loop end to end (train, save, reload) on a tiny ALBEF."""

from __future__ import annotations

import json

import pytest
import torch

from synground_assets.adapters.grounding import load_grounding_model
from synground_assets.adapters.grounding_albef import AlbefGroundingModel
from synground_assets.config.recipes import RoleSpec
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.gradcam import cross_attention_gradcam
from synground_assets.grounding.pointing_game import evaluate_pointing_game
from synground_assets.grounding.train import train
from synground_assets.tiny.grounding import build_tiny_albef
from synground_assets_tests.grounding.conftest import shapes_triplets


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_albef(tmp_path_factory.mktemp("tiny-albef"), seed=0)


@pytest.fixture
def model(folder):
    torch.manual_seed(0)
    return AlbefGroundingModel.from_pretrained(folder).eval()


def test_tiny_albef_folder_and_its_defaults(folder, model):
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "vocab.txt"}
    assert (model.image_size(), model.patch_grid(), model.patch_grid(96)) == (64, (8, 8), (12, 12))
    assert (model.gradcam_layer, model.max_text_tokens, model.info.adapter) == (2, 25, "albef")


def test_shapes_of_the_protocol_methods(model):
    triplets = shapes_triplets(2, 5, oracle_boxes=True)[:2]
    inputs = model.preprocess([t.load_image() for t in triplets], ["a red circle", "a green triangle above it"])
    embeds = model.encode_image(inputs.pixel_values)
    assert embeds.shape == (2, 1 + 64, 64)
    image_feat, text_feat = model.contrastive_features(embeds, inputs.input_ids, inputs.attention_mask)
    assert image_feat.shape == text_feat.shape == (2, 64)
    assert torch.allclose(image_feat.norm(dim=-1), torch.ones(2))
    logits, attention = model.itm_logits(embeds, inputs.input_ids, inputs.attention_mask, capture_layer=2)
    assert logits.shape == (2, 2) and attention.shape == (2, 2, inputs.input_ids.shape[1], 65)
    assert torch.allclose(attention.sum(-1), torch.ones_like(attention.sum(-1)))  # softmax probabilities
    with pytest.raises(ValueError, match="text layer 1 has no cross-attention"):
        model.itm_logits(embeds, inputs.input_ids, inputs.attention_mask, capture_layer=1)


def test_phrases_are_cleaned_and_truncated_only_while_training(model):
    images = shapes_triplets(1, 5)[0].load_image()
    long_phrase = "A red circle, to the LEFT of a blue square! " * 4
    evaluation = model.preprocess([images], [long_phrase])
    vocab = model.tokenizer.tokenizer.get_vocab()
    # 36 words: pre_caption keeps 30 (punctuation gone, lower-cased: no [UNK]); no token truncation.
    assert evaluation.input_ids.shape[1] == 1 + 30 and vocab["[UNK]"] not in evaluation.input_ids.tolist()[0]
    model.train()
    assert model.preprocess([images], [long_phrase]).input_ids.shape[1] == 25


def test_itm_is_the_same_batched_and_one_by_one(model):
    triplets = shapes_triplets(2, 7, oracle_boxes=True)[:2]
    images, phrases = [t.load_image() for t in triplets], ["a red circle", "a blue square below a yellow diamond"]
    inputs = model.preprocess(images, phrases)
    with torch.no_grad():
        batched = model.itm_logits(model.encode_image(inputs.pixel_values), inputs.input_ids, inputs.attention_mask)[0]
        for i in range(2):
            single = model.preprocess(images[i : i + 1], phrases[i : i + 1])
            alone = model.itm_logits(model.encode_image(single.pixel_values), single.input_ids,
                                     single.attention_mask)[0]
            assert torch.allclose(batched[i], alone[0], atol=1e-5)


def test_gradcam_layer_must_be_a_fusion_layer_other_than_the_last(folder):
    with pytest.raises(ValueError, match=r"gradcam_layer must be a fusion layer other than the last, in \[2, 2\]"):
        AlbefGroundingModel.from_pretrained(folder, gradcam_layer=3)


def test_recipe_specs_and_folders_load_the_albef_adapter(folder):
    spec = RoleSpec(adapter="albef", model=str(folder), device="cpu", options={"max_text_tokens": 12})
    assert isinstance(load_grounding_model(spec), AlbefGroundingModel)
    assert load_grounding_model(spec).max_text_tokens == 12
    assert isinstance(load_grounding_model(folder, device="cpu"), AlbefGroundingModel)  # told by its config.json


def test_tiny_registry_builds_it(tmp_path):
    from synground_assets import tiny

    built = tiny.ensure_tiny("albef-shapes", tmp_path)
    assert isinstance(load_grounding_model(RoleSpec(adapter="albef", model=str(built), device="cpu")),
                      AlbefGroundingModel)


def test_training_loop_trains_saves_and_reloads_albef(folder, tmp_path):
    triplets, held_out = shapes_triplets(6, first_seed=0), shapes_triplets(3, first_seed=900, oracle_boxes=True)
    model = AlbefGroundingModel.from_pretrained(folder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(learning_rate=1e-3, warmup_steps=1, max_steps=2, batch_size=6, log_every=1,
                         checkpoint_every=2, eval_batch_size=8, eval_protocol="amc", max_text_tokens=20)
    result = train(config, model, triplets, held_out, tmp_path)
    assert [entry["step"] for entry in result.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in result.history)
    assert not torch.equal(before["model.itm_head.weight"], model.state_dict()["model.itm_head.weight"])
    assert json.loads((result.model_path / "train_config.json").read_text())["eval_protocol"] == "amc"
    reloaded = load_grounding_model(result.model_path, device="cpu")
    assert isinstance(reloaded, AlbefGroundingModel)
    assert (reloaded.gradcam_layer, reloaded.max_text_tokens) == (2, 20)
    model.eval()
    inputs = model.preprocess([held_out[0].load_image()], [held_out[0].phrase])
    expected = cross_attention_gradcam(model, inputs).cam
    assert torch.allclose(cross_attention_gradcam(reloaded.eval(), inputs).cam, expected, atol=1e-6)
    again = evaluate_pointing_game(reloaded, held_out, protocol="amc")
    assert again.accuracy == result.metrics["pointing_game_accuracy"]


def test_a_gradcam_layer_the_model_cannot_save_is_refused_before_the_first_step(folder, tmp_path):
    """The last text layer trained to the end and crashed in save_pretrained; now nothing runs."""
    model = AlbefGroundingModel.from_pretrained(folder)
    last = model.model.config.text_layers - 1
    config = TrainConfig(learning_rate=1e-3, warmup_steps=1, max_steps=2, batch_size=6, gradcam_layer=last)
    with pytest.raises(ValueError, match=f"training.gradcam_layer must be in .* but is {last}"):
        train(config, model, shapes_triplets(6, first_seed=0), shapes_triplets(3, first_seed=900), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
