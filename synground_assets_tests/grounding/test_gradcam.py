"""GradCAM on cross-attention: orientation, padding, batching, and the graph it keeps."""

from __future__ import annotations

import pytest
import torch

from synground_assets.grounding.gradcam import cross_attention_gradcam, gradcam_from_attention
from synground_assets.grounding.pointing_game import heatmap_point, point_in_box
from synground_assets.tiny.shapes import ShapesImageGenerator

ROWS, COLS = 4, 6  # not square, so a transposed map cannot pass


def planted(peak_row: int, peak_col: int, batch: int = 1, heads: int = 2, tokens: int = 5):
    """Uniform attention plus a peak on one patch for every head and token; gradient all ones."""
    attention = torch.full((batch, heads, tokens, 1 + ROWS * COLS), 0.01)
    attention[..., 0] = 0.5  # a large vision [CLS] column, which must be dropped
    attention[..., 1 + peak_row * COLS + peak_col] = 0.3
    return attention, torch.ones_like(attention), torch.ones(batch, tokens)


def test_planted_peak_comes_out_at_its_patch():
    for row, col in [(0, 0), (1, 4), (3, 5), (2, 1)]:
        attention, gradient, text_mask = planted(row, col)
        cam = gradcam_from_attention(attention, gradient, text_mask, (ROWS, COLS))[0]
        assert cam.shape == (ROWS, COLS)
        assert divmod(int(cam.argmax()), COLS) == (row, col)
        assert cam.max().item() == pytest.approx(1, abs=1e-5) and cam.min() == 0


def test_planted_peak_upsampled_lands_in_its_image_region():
    width, height = 60, 40  # each patch is 10 x 10 pixels
    for row, col in [(1, 4), (3, 0), (0, 5)]:
        attention, gradient, text_mask = planted(row, col)
        cam = gradcam_from_attention(attention, gradient, text_mask, (ROWS, COLS))[0]
        point = heatmap_point(cam, (width, height))
        assert point_in_box(point, (col * 10, row * 10, col * 10 + 10, row * 10 + 10))


def test_negative_gradients_are_ignored():
    attention, gradient, text_mask = planted(1, 1)
    gradient[..., 1 + 1 * COLS + 1] = -5.0  # the attention peak pushes the match down
    gradient[..., 1 + 2 * COLS + 3] = 2.0
    cam = gradcam_from_attention(attention, gradient, text_mask, (ROWS, COLS))[0]
    assert divmod(int(cam.argmax()), COLS) == (2, 3)
    assert cam[1, 1] == 0


def test_padding_token_rows_change_nothing():
    attention, gradient, _ = planted(2, 2, tokens=6)
    text_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    reference = gradcam_from_attention(attention, gradient, text_mask, (ROWS, COLS))
    attention[:, :, 4:, :] = torch.rand_like(attention[:, :, 4:, :])
    gradient[:, :, 4:, :] = 10 * torch.rand_like(gradient[:, :, 4:, :])
    torch.testing.assert_close(gradcam_from_attention(attention, gradient, text_mask, (ROWS, COLS)), reference)


def shapes_inputs(model, phrases):
    generator = ShapesImageGenerator(64)
    images = [generator.render("a red circle above a blue square and a green diamond", seed).image
              for seed in range(len(phrases))]
    return images, model.preprocess(images, phrases)


def test_model_gradcam_batched_equals_one_by_one(tiny_model):
    phrases = ["a red circle", "a blue square above a green diamond", "a green diamond"]
    images, inputs = shapes_inputs(tiny_model, phrases)
    batched = cross_attention_gradcam(tiny_model, inputs).cam
    assert batched.shape == (3, 8, 8)
    for i in range(3):
        alone = cross_attention_gradcam(tiny_model, tiny_model.preprocess([images[i]], [phrases[i]])).cam
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-4)


def test_model_gradcam_ignores_padding(tiny_model):
    images, short = shapes_inputs(tiny_model, ["a red circle"])
    _, padded = shapes_inputs(tiny_model, ["a red circle"])
    pad = tiny_model.processor.tokenizer.pad_token_id
    padded.input_ids = torch.cat([padded.input_ids, torch.full((1, 4), pad)], dim=1)
    padded.attention_mask = torch.cat([padded.attention_mask, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    torch.testing.assert_close(
        cross_attention_gradcam(tiny_model, padded).cam, cross_attention_gradcam(tiny_model, short).cam,
        atol=1e-5, rtol=1e-4,
    )


def test_create_graph_keeps_the_map_trainable(tiny_model):
    _, inputs = shapes_inputs(tiny_model, ["a red circle", "a blue square"])
    detached = cross_attention_gradcam(tiny_model, inputs)
    assert not detached.cam.requires_grad
    tiny_model.train()
    kept = cross_attention_gradcam(tiny_model, inputs, create_graph=True)
    assert kept.cam.requires_grad
    (kept.cam * torch.linspace(0, 1, 64).reshape(8, 8)).sum().backward()
    query = tiny_model.model.text_encoder.encoder.layer[tiny_model.gradcam_layer].crossattention.self.query
    assert query.weight.grad is not None and query.weight.grad.abs().sum() > 0
    torch.testing.assert_close(kept.cam.detach(), detached.cam)
