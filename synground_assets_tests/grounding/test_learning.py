"""The learning core learns: a few hundred AMC steps make a random tiny BLIP point at the phrase.

A short version of bench/learning/amc.py (which trains longer and compares against no-AMC): training
boxes come from the shapes detector, the held-out images from other seeds with their true boxes.
"""

from __future__ import annotations

import pytest
import torch

from synground_assets.adapters.grounding_blip import BlipGroundingModel
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.pointing_game import centre_point_baseline, evaluate_pointing_game, queries_of
from synground_assets.grounding.train import train
from synground_assets_tests.grounding.conftest import shapes_triplets


@pytest.fixture
def one_thread():
    """One thread: on a small shared machine, two busy threads slow these tiny matmuls down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_amc_training_makes_gradcam_point_at_the_phrase(tiny_blip_folder, tmp_path, one_thread):
    train_set = shapes_triplets(400, first_seed=0)
    held_out = shapes_triplets(60, first_seed=1_000_000, oracle_boxes=True)
    untrained = evaluate_pointing_game(BlipGroundingModel.from_pretrained(tiny_blip_folder), held_out).accuracy
    centre = centre_point_baseline(queries_of(held_out)).accuracy

    config = TrainConfig(learning_rate=1e-3, min_learning_rate=1e-5, warmup_steps=15, max_steps=300,
                         batch_size=32, colour_jitter=False, grayscale=False, checkpoint_every=300)
    model = BlipGroundingModel.from_pretrained(tiny_blip_folder)
    result = train(config, model, train_set, held_out, tmp_path)

    trained = result.metrics["pointing_game_accuracy"]
    assert trained >= 0.6, (trained, untrained, centre)
    assert trained >= untrained + 0.25 and trained >= centre + 0.4, (trained, untrained, centre)
    first, last = result.history[0], result.history[-1]
    assert last["amc_max"] < first["amc_max"]
