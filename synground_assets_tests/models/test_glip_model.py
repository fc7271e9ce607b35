"""A tiny GLIP end to end: shapes through Swin/FPN, detections, the folder round trip, input errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synground_assets.models.glip import GlipDetections, GlipForGrounding
from synground_assets.models.glip.config import GlipConfig, glip_large, glip_tiny
from synground_assets.models.glip.dyhead import permute_and_flatten

SIZES = dict(swin_embed_dim=8, swin_depths=(1, 2, 1, 1), swin_heads=(1, 1, 2, 2), swin_window_size=3,
             fpn_channels=16, dyhead_channels=16, group_norm_groups=4, dyhead_num_convs=2, text_hidden_size=8,
             text_layers=2, text_heads=2, text_intermediate_size=12, fuse_embed_dim=8, fuse_heads=2,
             max_query_len=16, text_max_position_embeddings=20, vocab_size=40)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = GlipForGrounding(glip_tiny(**SIZES)).eval()
    with torch.no_grad():
        model.rpn.head.bias0.fill_(1.0)  # random token scores above INFERENCE_TH, so boxes come out
    return model


def text(batch=1):
    ids = torch.randint(5, 40, (batch, 16))
    mask = torch.zeros(batch, 16, dtype=torch.long)
    mask[:, :7] = 1
    ids[:, 7:] = 0
    return ids, mask


def test_presets_hold_the_official_sizes():
    t, large = glip_tiny(), glip_large()
    assert (t.swin_embed_dim, t.swin_depths, t.swin_heads, t.swin_window_size, t.dyhead_num_convs) == \
        (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 6)
    assert (large.swin_embed_dim, large.swin_depths, large.swin_heads, large.swin_window_size,
            large.dyhead_num_convs) == (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 8)
    assert (t.inference_th, t.pre_nms_top_n, t.nms_th, t.detections_per_img, t.max_query_len) == \
        (0.05, 1000, 0.6, 100, 256)
    with pytest.raises(ValueError, match="fpn_channels .* must equal dyhead_channels"):
        GlipConfig(fpn_channels=128)


def test_fpn_levels_and_p6_from_p5(tiny):
    with torch.no_grad():
        features = tiny.backbone(torch.randn(1, 3, 96, 64))
        assert [tuple(f.shape[-2:]) for f in features] == [(12, 8), (6, 4), (3, 2), (2, 1), (1, 1)]
        torch.testing.assert_close(features[3], tiny.backbone.fpn.top_blocks.p6(features[2]))
        torch.testing.assert_close(features[4], tiny.backbone.fpn.top_blocks.p7(F.relu(features[3])))


def test_detect_gives_boxes_in_the_resized_image_with_phrase_labels(tiny):
    torch.manual_seed(1)
    ids, mask = text(2)
    sizes = [(90, 60), (64, 50)]
    maps = [{1: [1, 2], 2: [4]}, {1: [3]}]
    out = tiny.detect(torch.randn(2, 3, 96, 64), sizes, ids, mask, maps)
    assert len(out) == 2 and all(isinstance(d, GlipDetections) for d in out)
    for det, (h, w), positive in zip(out, sizes, maps):
        assert len(det) > 0
        assert det.boxes_xyxy.shape == (len(det), 4)
        assert (det.boxes_xyxy[:, 0] >= 0).all() and (det.boxes_xyxy[:, 2] <= w - 1).all()
        assert (det.boxes_xyxy[:, 1] >= 0).all() and (det.boxes_xyxy[:, 3] <= h - 1).all()
        assert set(det.labels.tolist()) <= set(positive)
        assert torch.equal(det.scores, det.scores.sort(descending=True).values)
        assert len(det) <= tiny.config.detections_per_img


def test_fused_language_features_feed_the_dot_product(tiny):
    """GLIP-T scores tokens with the tower's fused language output (vldyhead.py:746-747)."""
    torch.manual_seed(2)
    ids, mask = text()
    with torch.no_grad():
        outputs = tiny(torch.randn(1, 3, 64, 64), ids, mask)
        hidden, embedded = tiny.language_backbone.body(ids, mask)
        features = tiny.backbone(torch.randn(1, 3, 64, 64))
        head = tiny.rpn.head
        state = head.dyhead_tower({"visual": features, "hidden": hidden, "masks": mask})
        unit = F.normalize(state["hidden"], dim=-1)
        proj = head.dot_product_projection_text(unit / 2.0)
        expected = permute_and_flatten(state["visual"][0]) @ proj.transpose(1, 2) / head.log_scale.exp() \
            + (unit @ head.bias_lang + head.bias0)[:, None, :]
        _, _, logits = head(features, hidden, embedded, mask)
    torch.testing.assert_close(logits[0], expected, atol=1e-5, rtol=1e-5)
    assert outputs.dot_product_logits[0].shape == (1, 64, 16)


def test_save_and_from_pretrained_give_the_same_detections(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "glip")
    again = GlipForGrounding.from_pretrained(tmp_path / "glip")
    torch.manual_seed(3)
    pixels, (ids, mask) = torch.randn(1, 3, 64, 96), text()
    a = tiny.detect(pixels, [(64, 90)], ids, mask, [{1: [1, 2]}])[0]
    b = again.detect(pixels, [(64, 90)], ids, mask, [{1: [1, 2]}])[0]
    assert torch.equal(a.boxes_xyxy, b.boxes_xyxy) and torch.equal(a.scores, b.scores)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        GlipForGrounding.from_pretrained(tmp_path)


def test_inputs_are_checked(tiny):
    ids, mask = text()
    with pytest.raises(ValueError, match="not padded to a multiple of 32"):
        tiny.detect(torch.randn(1, 3, 70, 64), [(70, 64)], ids, mask, [{1: [1]}])
    with pytest.raises(ValueError, match=r"input_ids must be \(1, 16\)"):
        tiny.detect(torch.randn(1, 3, 64, 64), [(64, 64)], ids[:, :8], mask, [{1: [1]}])
    with pytest.raises(ValueError, match="1 images but 2 image_sizes"):
        tiny.detect(torch.randn(1, 3, 64, 64), [(64, 64)] * 2, ids, mask, [{1: [1]}])


def test_glip_t_a_without_early_fusion_detects_from_bert_embedded():
    from synground_assets.models.glip.config import glip_tiny_a

    torch.manual_seed(4)
    model = GlipForGrounding(glip_tiny_a(**SIZES)).eval()
    assert not any(".b_attn." in key for key in model.state_dict())
    with torch.no_grad():
        model.rpn.head.bias0.fill_(1.0)
    ids, mask = text()
    (det,) = model.detect(torch.randn(1, 3, 64, 64), [(64, 64)], ids, mask, [{2: [1, 2]}])
    assert len(det) > 0 and set(det.labels.tolist()) == {2}
