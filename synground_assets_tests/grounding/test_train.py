"""The training loop: config validation, outputs, logging, resume, and its failure modes."""

from __future__ import annotations

import json

import pytest
import torch

from synground_assets.adapters.grounding import load_grounding_model
from synground_assets.adapters.grounding_blip import BlipGroundingModel
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.train import train
from synground_assets_tests.grounding.conftest import shapes_triplets


def small_config(**overrides) -> TrainConfig:
    settings = dict(learning_rate=1e-3, warmup_steps=1, max_steps=4, batch_size=6, log_every=1,
                    checkpoint_every=2, eval_batch_size=8)
    return TrainConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def triplets():
    return shapes_triplets(6, first_seed=0)


@pytest.fixture(scope="module")
def held_out():
    return shapes_triplets(3, first_seed=900, oracle_boxes=True)


def test_from_dict_validates_keys_and_types():
    config = TrainConfig.from_dict({"learning_rate": 1, "max_steps": 10, "gradcam_layer": None})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    with pytest.raises(ValueError, match="unknown training setting.*learnig_rate"):
        TrainConfig.from_dict({"learnig_rate": 1e-4})
    with pytest.raises(ValueError, match="'max_steps': expected int"):
        TrainConfig.from_dict({"max_steps": 10.5})
    with pytest.raises(ValueError, match="'horizontal_flip': expected bool"):
        TrainConfig.from_dict({"horizontal_flip": "yes"})
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        TrainConfig.from_dict({"batch_size": 1})
    with pytest.raises(ValueError, match="amp_dtype"):
        TrainConfig.from_dict({"amp_dtype": "int8"})


def test_train_writes_a_reloadable_model_config_and_metrics(tiny_blip_folder, triplets, held_out, tmp_path):
    logged = []
    model = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    result = train(small_config(), model, triplets, held_out, tmp_path, log_fn=lambda s, m: logged.append((s, m)))
    assert [entry["step"] for entry in result.history] == [1, 2, 3, 4]
    assert {"loss", "itc", "itm", "amc_mean", "amc_max", "learning_rate", "temperature"} <= set(result.history[0])
    assert [step for step, metrics in logged if "loss" in metrics] == [1, 2, 3, 4]
    assert logged[-1] == (4, {"pointing_game_accuracy": result.metrics["pointing_game_accuracy"]})
    assert 0 <= result.metrics["pointing_game_accuracy"] <= 1
    assert result.model_path == tmp_path / "model"
    saved = json.loads((result.model_path / "train_config.json").read_text())
    assert saved["max_steps"] == 4 and saved["gradcam_layer"] == model.gradcam_layer
    assert json.loads((tmp_path / "metrics.json").read_text()) == result.metrics
    assert [p.name for p in sorted((tmp_path / "checkpoints").glob("*.pt"))] == ["step-0000002.pt", "step-0000004.pt"]
    reloaded = load_grounding_model(result.model_path, device="cpu")
    assert reloaded.gradcam_layer == model.gradcam_layer
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor)


def test_training_changes_the_weights_and_no_amc_skips_the_map_losses(tiny_blip_folder, triplets, tmp_path):
    model = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(small_config(amc_mean_weight=0.0, amc_max_weight=0.0, max_steps=2), model, triplets, [], tmp_path)
    assert "amc_max" not in result.history[-1] and "pointing_game_accuracy" not in result.metrics
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("vision_model" in k for k in changed) and any("text_encoder" in k for k in changed)


class Crash(RuntimeError):
    pass


def test_a_resumed_run_ends_where_a_straight_run_does(tiny_blip_folder, triplets, tmp_path):
    config = small_config(horizontal_flip=True)
    straight = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    train(config, straight, triplets, [], tmp_path / "straight")

    def crash_at_step_3(step, metrics):
        if step == 3:
            raise Crash

    interrupted = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    with pytest.raises(Crash):
        train(config, interrupted, triplets, [], tmp_path / "resumed", log_fn=crash_at_step_3)
    resumed_steps = []
    resumed = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    result = train(config, resumed, triplets, [], tmp_path / "resumed", log_fn=lambda s, m: resumed_steps.append(s))
    assert resumed_steps == [3, 4]
    assert [entry["step"] for entry in result.history] == [1, 2, 3, 4]
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor)


def test_resume_refuses_changed_settings(tiny_blip_folder, triplets, tmp_path):
    train(small_config(max_steps=2), BlipGroundingModel.from_pretrained(tiny_blip_folder), triplets, [], tmp_path)
    with pytest.raises(ValueError, match="learning_rate: 0.001 -> 0.01.*new output folder"):
        train(small_config(max_steps=2, learning_rate=1e-2), BlipGroundingModel.from_pretrained(tiny_blip_folder),
              triplets, [], tmp_path)


def test_the_configured_gradcam_layer_is_trained_evaluated_and_reloaded(tiny_blip_folder, triplets, tmp_path):
    model = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    assert model.gradcam_layer != 0
    result = train(small_config(max_steps=1, gradcam_layer=0), model, triplets, [], tmp_path)
    assert model.gradcam_layer == 0
    assert load_grounding_model(result.model_path, device="cpu").gradcam_layer == 0


def test_a_non_finite_loss_stops_training_with_a_clear_error(tiny_blip_folder, triplets, tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
        train(small_config(itc_weight=float("nan")), BlipGroundingModel.from_pretrained(tiny_blip_folder),
              triplets, [], tmp_path)
    assert not (tmp_path / "model").exists()


def test_gradient_accumulation_and_real_triplets(tiny_blip_folder, triplets, tmp_path):
    real = shapes_triplets(2, first_seed=300)
    result = train(small_config(max_steps=1, grad_accumulation=2, real_data_ratio=0.5),
                   BlipGroundingModel.from_pretrained(tiny_blip_folder), triplets, [], tmp_path, real_triplets=real)
    assert len(result.history) == 1 and torch.isfinite(torch.tensor(result.history[0]["loss"]))


def test_gradient_checkpointing_recomputes_the_encoders_with_the_same_loss_and_gradients(tiny_blip_folder, triplets):
    from synground_assets.grounding.loader import make_batch
    from synground_assets.grounding.objective import GroundingObjective, TrainingModule
    from synground_assets.grounding.train import enable_gradient_checkpointing

    outcomes = []
    for checkpointing in (False, True):
        model = BlipGroundingModel.from_pretrained(tiny_blip_folder)
        if checkpointing:
            enable_gradient_checkpointing(model)
            assert model.model.vision_model.encoder.layers[0].gradient_checkpointing
        module = TrainingModule(model, GroundingObjective(small_config(gradcam_layer=model.gradcam_layer))).train()
        batch = make_batch(model.preprocessor(), triplets, list(range(len(triplets))), None, 64)
        losses = module(batch, torch.Generator().manual_seed(0))
        losses["loss"].backward()  # through the GradCAM map's double backward
        outcomes.append((losses["loss"].item(), {k: p.grad for k, p in module.named_parameters()}))
    (plain_loss, plain_grads), (loss, grads) = outcomes
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7)
