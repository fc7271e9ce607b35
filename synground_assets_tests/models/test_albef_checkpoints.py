"""Official ALBEF / AMC checkpoint layouts convert and load strictly, and give the same model."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from synground_assets.models.albef import (
    AlbefModel,
    CheckpointMismatch,
    from_pretrained,
    load_official,
    read_official_checkpoint,
    save_pretrained,
)
from synground_assets.models.albef.__main__ import main as albef_cli
from synground_assets.models.albef.vit import interpolate_pos_embed
from synground_assets_tests.models.conftest import tiny_config

MOMENTUM = ("visual_encoder", "vision_proj", "text_proj")


def pretrain_layout(model: AlbefModel, amc: bool = False) -> dict[str, torch.Tensor]:
    """ALBEF.pth / AMC's layout: `text_encoder.bert.*`, MLM head, momentum copies, queues, pointers."""
    state = {}
    for key, tensor in model.state_dict().items():
        state[key.replace("text_encoder.", "text_encoder.bert.", 1)] = tensor.clone()
        top = key.split(".")[0]
        if top in MOMENTUM or top == "text_encoder":  # momentum copies differ from the model
            momentum = key.replace(top, top + "_m", 1).replace("text_encoder_m.", "text_encoder_m.bert.", 1)
            state[momentum] = tensor + 1.0
    config, vocab = model.config, model.config.vocab_size
    width, positions = config.text_width, torch.arange(config.max_position_embeddings)[None]
    state |= {
        "text_encoder.bert.embeddings.position_ids": positions,
        "text_encoder_m.bert.embeddings.position_ids": positions,
        "text_encoder.cls.predictions.bias": torch.zeros(vocab),
        "text_encoder.cls.predictions.transform.dense.weight": torch.randn(width, width),
        "text_encoder.cls.predictions.transform.dense.bias": torch.zeros(width),
        "text_encoder.cls.predictions.transform.LayerNorm.weight": torch.ones(width),
        "text_encoder.cls.predictions.transform.LayerNorm.bias": torch.zeros(width),
        "text_encoder.cls.predictions.decoder.weight": model.text_encoder.embeddings.word_embeddings.weight.clone(),
        "text_encoder.cls.predictions.decoder.bias": torch.zeros(vocab),
        "image_queue": torch.randn(config.embed_dim, 64),
        "text_queue": torch.randn(config.embed_dim, 64),
    }
    pointers = ("queue_ptr_img", "queue_ptr_txt") if amc else ("queue_ptr",)
    return state | {name: torch.zeros(1, dtype=torch.long) for name in pointers}


def grounding_layout(model: AlbefModel) -> dict[str, torch.Tensor]:
    """ALBEF Grounding.py's layout: no `bert.`, no MLM head, momentum copies, queues, idx_queue."""
    state = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    state |= {f"{top}_m.{key[len(top) + 1:]}": tensor + 1.0 for key, tensor in model.state_dict().items()
              for top in MOMENTUM if key.startswith(top + ".")}
    config = model.config
    return state | {
        "text_encoder.embeddings.position_ids": torch.arange(config.max_position_embeddings)[None],
        "image_queue": torch.randn(config.embed_dim, 64),
        "text_queue": torch.randn(config.embed_dim, 64),
        "idx_queue": torch.full((1, 64), -100),
        "queue_ptr": torch.zeros(1, dtype=torch.long),
    }


def save_official(path, state):
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {},
                "config": {"image_res": 32, "batch_size": 64}, "epoch": 3}, path)
    return path


def outputs(model: AlbefModel, resolution: int = 32) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, resolution, resolution)
    ids, mask = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        embeds = model.image_embeds(pixels)
        return (embeds, model.itm_logits(embeds, ids, mask), *model.contrastive_features(embeds, ids, mask))


@pytest.mark.parametrize("layout", ["pretrain", "pretrain-amc", "grounding"])
def test_official_layouts_convert_and_load_strictly_to_the_same_model(tiny_albef, tmp_path, layout):
    state = (grounding_layout(tiny_albef) if layout == "grounding"
             else pretrain_layout(tiny_albef, amc=layout.endswith("amc")))
    path = save_official(tmp_path / "checkpoint.pth", state)
    converted = load_official(path, tiny_config()).eval()
    for expected, got in zip(outputs(tiny_albef), outputs(converted)):
        assert torch.equal(expected, got)


def test_checkpoint_at_another_resolution_gets_its_pos_embed_interpolated(tiny_albef, tmp_path):
    state = pretrain_layout(tiny_albef)
    state["visual_encoder.pos_embed"] = interpolate_pos_embed(tiny_albef.visual_encoder.pos_embed.detach(), 8)
    path = save_official(tmp_path / "checkpoint-64px.pth", state)
    # Same resolution as saved: untouched; the model runs as the 32 px one does at 64 px.
    at_64 = load_official(path, tiny_config(image_size=64)).eval()
    assert torch.equal(at_64.visual_encoder.pos_embed, state["visual_encoder.pos_embed"])
    for expected, got in zip(outputs(tiny_albef, 64), outputs(at_64, 64)):
        assert torch.allclose(expected, got, atol=1e-6)
    # Back to 32 px: the class token kept, the grid resized bicubic (align_corners=False).
    at_32 = load_official(path, tiny_config()).eval()
    saved = state["visual_encoder.pos_embed"]
    grid = saved[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(1, 2)
    assert torch.equal(at_32.visual_encoder.pos_embed[:, :1], saved[:, :1])
    assert torch.allclose(at_32.visual_encoder.pos_embed[:, 1:], expected)
    # Sensible: up then down is close to where it started, far closer than a random grid.
    original = tiny_albef.visual_encoder.pos_embed.detach()
    error = (at_32.visual_encoder.pos_embed - original).abs().mean()
    assert error < 0.5 * (original - original[:, torch.randperm(original.shape[1])]).abs().mean()


@pytest.mark.parametrize("change, named", [("drop", "itm_head.weight"), ("add", "text_encoder.pooler.dense.weight")])
def test_a_checkpoint_that_does_not_fit_names_the_keys(tiny_albef, tmp_path, change, named):
    state = grounding_layout(tiny_albef)
    if change == "drop":
        del state[named]
    else:
        state[named] = torch.zeros(32, 32)
    path = save_official(tmp_path / "checkpoint.pth", state)
    with pytest.raises(CheckpointMismatch, match=("missing" if change == "drop" else "unexpected") + f" keys: {named}"):
        load_official(path, tiny_config())


def test_a_size_mismatch_names_the_key_and_both_shapes(tiny_albef, tmp_path):
    path = save_official(tmp_path / "checkpoint.pth", grounding_layout(tiny_albef))
    with pytest.raises(CheckpointMismatch, match=r"itm_head.weight: checkpoint \(2, 32\) vs model \(2, 48\)"):
        load_official(path, tiny_config(text_width=48, vision_width=48, intermediate_size=96))


def test_a_file_with_pickled_objects_is_refused_not_loaded_unsafely(tiny_albef, tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": grounding_layout(tiny_albef), "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError,
                       match=r"(?s)weights_only=True\) refused it .*argparse.Namespace.*not loaded unsafely"):
        read_official_checkpoint(path)


def test_save_pretrained_folder_reloads_the_same_model(tiny_albef, tokenizer, tmp_path):
    save_pretrained(tmp_path / "albef", tiny_albef, tokenizer)
    assert {p.name for p in (tmp_path / "albef").iterdir()} == {"model.safetensors", "config.json", "vocab.txt"}
    model, reloaded_tokenizer = from_pretrained(tmp_path / "albef")
    assert model.config == tiny_albef.config
    assert reloaded_tokenizer(["a red circle"])[0].tolist() == tokenizer(["a red circle"])[0].tolist()
    for expected, got in zip(outputs(tiny_albef), outputs(model.eval())):
        assert torch.equal(expected, got)


def test_convert_command_writes_a_folder_that_reloads(tiny_albef, tokenizer, vocab_file, tmp_path):
    save_pretrained(tmp_path / "sizes", tiny_albef, tokenizer)  # its config.json gives the tiny sizes
    path = save_official(tmp_path / "ALBEF.pth", pretrain_layout(tiny_albef, amc=True))
    assert albef_cli(["convert", str(path), str(tmp_path / "out"), "--config", str(tmp_path / "sizes"),
                      "--vocab", str(vocab_file), "--max-text-tokens", "25"]) == 0
    model, _ = from_pretrained(tmp_path / "out")
    assert model.config.max_text_tokens == 25
    for expected, got in zip(outputs(tiny_albef), outputs(model.eval())):
        assert torch.equal(expected, got)


def test_temperature_is_clamped_into_albefs_range(tiny_albef):
    with torch.no_grad():
        tiny_albef.temp.fill_(5.0)
    assert tiny_albef.temperature().item() == 0.5 and tiny_albef.temp.item() == 0.5
    with torch.no_grad():
        tiny_albef.temp.fill_(1e-5)
    assert tiny_albef.temperature().item() == pytest.approx(0.001)
