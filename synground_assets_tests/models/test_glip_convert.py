"""Official GLIP checkpoints convert strictly, in both layouts (with and without DDP's `module.`).

The fixtures are written in the OFFICIAL key layout, enumerated here from the official module definitions
(microsoft/GLIP 9dda955: backbone/swint.py, backbone/fpn.py, language_backbone/bert_model.py with
transformers' BertModel, rpn/vldyhead.py, utils/fuse_helper.py, layers/dyrelu.py, rpn/anchor_generator.py),
not from this project's modules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from synground_assets.models.glip import GlipForGrounding, load_official
from synground_assets.models.glip.__main__ import main as glip_cli
from synground_assets.models.glip.config import glip_tiny, glip_tiny_a
from synground_assets.models.glip.convert import detect_preset
from synground_assets.models.glip.modeling import CheckpointMismatch

SIZES = dict(swin_embed_dim=8, swin_depths=(1, 2, 1, 1), swin_heads=(1, 1, 2, 2), swin_window_size=3,
             fpn_channels=16, dyhead_channels=16, group_norm_groups=4, dyhead_num_convs=2, text_hidden_size=8,
             text_layers=2, text_heads=2, text_intermediate_size=12, fuse_embed_dim=8, fuse_heads=2,
             max_query_len=16, text_max_position_embeddings=20)


def official_shapes(config) -> dict[str, tuple[int, ...]]:
    """{official key (no `module.`): shape} of a GLIP model of `config`, from the official modules."""
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name, out_f, in_f, bias=True):
        shapes[f"{name}.weight"] = (out_f, in_f)
        if bias:
            shapes[f"{name}.bias"] = (out_f,)

    def norm(name, width):
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (width,)

    def conv(name, out_c, in_c, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out_c, in_c, k, k), (out_c,)

    # SwinTransformer (swint.py:441-560): patch_embed, layers.{s}.blocks.{b}, layers.{s}.downsample, norm1..3.
    body, dim, w = "backbone.body", config.swin_embed_dim, config.swin_window_size
    conv(f"{body}.patch_embed.proj", dim, 3, 4)
    norm(f"{body}.patch_embed.norm", dim)
    for s, (depth, heads) in enumerate(zip(config.swin_depths, config.swin_heads)):
        c = dim * 2 ** s
        for b in range(depth):
            block = f"{body}.layers.{s}.blocks.{b}"
            norm(f"{block}.norm1", c)
            shapes[f"{block}.attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, heads)
            shapes[f"{block}.attn.relative_position_index"] = (w * w, w * w)
            linear(f"{block}.attn.qkv", 3 * c, c)
            linear(f"{block}.attn.proj", c, c)
            norm(f"{block}.norm2", c)
            linear(f"{block}.mlp.fc1", 4 * c, c)
            linear(f"{block}.mlp.fc2", c, 4 * c)
        if s < 3:
            norm(f"{body}.layers.{s}.downsample.norm", 4 * c)
            linear(f"{body}.layers.{s}.downsample.reduction", 2 * c, 4 * c, bias=False)
        if s > 0:
            norm(f"{body}.norm{s}", c)
    # FPN (backbone/__init__.py:55-69, fpn.py): fpn_inner2..4, fpn_layer2..4, top_blocks.p6/p7.
    out = config.fpn_channels
    for idx, s in zip((2, 3, 4), (1, 2, 3)):
        conv(f"backbone.fpn.fpn_inner{idx}", out, dim * 2 ** s, 1)
        conv(f"backbone.fpn.fpn_layer{idx}", out, out, 3)
    conv("backbone.fpn.top_blocks.p6", out, out, 3)
    conv("backbone.fpn.top_blocks.p7", out, out, 3)
    # BertModel(add_pooling_layer=False) under language_backbone.body.model (bert_model.py:20).
    bert, h, inter = "language_backbone.body.model", config.text_hidden_size, config.text_intermediate_size
    shapes[f"{bert}.embeddings.word_embeddings.weight"] = (config.vocab_size, h)
    shapes[f"{bert}.embeddings.position_embeddings.weight"] = (config.text_max_position_embeddings, h)
    shapes[f"{bert}.embeddings.token_type_embeddings.weight"] = (config.text_type_vocab_size, h)
    norm(f"{bert}.embeddings.LayerNorm", h)

    def bert_layer(prefix):
        for part in ("query", "key", "value"):
            linear(f"{prefix}.attention.self.{part}", h, h)
        linear(f"{prefix}.attention.output.dense", h, h)
        norm(f"{prefix}.attention.output.LayerNorm", h)
        linear(f"{prefix}.intermediate.dense", inter, h)
        linear(f"{prefix}.output.dense", h, inter)
        norm(f"{prefix}.output.LayerNorm", h)

    for i in range(config.text_layers):
        bert_layer(f"{bert}.encoder.layer.{i}")
    # VLDyHead (vldyhead.py:597-731).
    head, c = "rpn.head", config.dyhead_channels
    step = 3 if config.early_fuse_on else 1
    for i in range(config.dyhead_num_convs):
        if config.early_fuse_on:
            fuse = f"{head}.dyhead_tower.{step * i}.b_attn"
            norm(f"{fuse}.layer_norm_v", c)
            norm(f"{fuse}.layer_norm_l", h)
            shapes[f"{fuse}.gamma_v"], shapes[f"{fuse}.gamma_l"] = (c,), (h,)
            e = config.fuse_embed_dim
            for name, o, n in (("v_proj", e, c), ("l_proj", e, h), ("values_v_proj", e, c),
                               ("values_l_proj", e, h), ("out_v_proj", c, e), ("out_l_proj", h, e)):
                linear(f"{fuse}.attn.{name}", o, n)
            if i < config.dyhead_num_convs - 1 or config.use_fused_features_dot_product:
                bert_layer(f"{head}.dyhead_tower.{step * i + 1}")
        dy = f"{head}.dyhead_tower.{step * i + step - 1}"
        conv(f"{dy}.offset", 27, c, 3)
        for j in range(3):
            conv(f"{dy}.DyConv.{j}.conv", c, c, 3)
            norm(f"{dy}.DyConv.{j}.bn", c)
        conv(f"{dy}.AttnConv.1", 1, c, 1)
        linear(f"{dy}.relu.fc.0", c // 4, c)
        linear(f"{dy}.relu.fc.2", 4 * c, c // 4)
    conv(f"{head}.cls_logits", config.num_classes, c, 1)
    conv(f"{head}.bbox_pred", 4, c, 1)
    conv(f"{head}.centerness", 1, c, 1)
    linear(f"{head}.dot_product_projection_text", c, h)
    shapes[f"{head}.log_scale"], shapes[f"{head}.bias0"], shapes[f"{head}.bias_lang"] = (1,), (1,), (h,)
    for level in range(5):
        shapes[f"{head}.scales.{level}.scale"] = (1,)
    return shapes


def official_state(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout, with the extras the released files carry."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=generator) * 0.1 for key, shape in official_shapes(config).items()}
    w = config.swin_window_size
    index = torch.tensor([[(p // w - q // w + w - 1) * (2 * w - 1) + (p % w - q % w + w - 1)
                           for q in range(w * w)] for p in range(w * w)])
    for key in state:
        if key.endswith("relative_position_index"):
            state[key] = index.clone()
    bert = "language_backbone.body.model"
    state[f"{bert}.embeddings.position_ids"] = torch.arange(config.text_max_position_embeddings)[None]
    state[f"{bert}.pooler.dense.weight"] = torch.randn(config.text_hidden_size, config.text_hidden_size)
    state[f"{bert}.pooler.dense.bias"] = torch.zeros(config.text_hidden_size)
    for level, (stride, size) in enumerate(zip(config.anchor_strides, config.anchor_sizes)):
        # Legacy Detectron base anchor: centred at (stride - 1) / 2, half extent (size - 1) / 2.
        centre, half = (stride - 1) / 2, (size - 1) / 2
        state[f"rpn.anchor_generator.cell_anchors.{level}"] = torch.tensor(
            [[centre - half, centre - half, centre + half, centre + half]])
    return state


def save_official(path, state, prefixed: bool) -> None:
    model = {("module." + k if prefixed else k): v for k, v in state.items()}
    torch.save({"model": model, "iteration": 12345, "optimizer": {"state": {}, "param_groups": []}}, path)


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    from transformers import BertTokenizerFast

    from synground_assets.tiny.tokenizers import bert_tokenizer

    folder = tmp_path_factory.mktemp("glip-bert")
    bert_tokenizer().save_pretrained(folder)
    return folder, len(BertTokenizerFast.from_pretrained(folder))


@pytest.mark.parametrize("make", [glip_tiny, glip_tiny_a,
                                  lambda **kw: glip_tiny(use_fused_features_dot_product=False, **kw)],
                         ids=["glip-t", "glip-t-a", "fused-no-dot"])
def test_the_model_expects_exactly_the_official_keys(make):
    config = make(**SIZES, vocab_size=50)
    assert set(GlipForGrounding(config).state_dict()) == set(official_shapes(config))
    shapes = {k: tuple(v.shape) for k, v in GlipForGrounding(config).state_dict().items()}
    assert shapes == official_shapes(config)


@pytest.mark.parametrize("prefixed", [True, False], ids=["module-prefix", "no-prefix"])
@pytest.mark.parametrize("preset", ["tiny", "tiny-a"])
def test_cli_converts_both_layouts_and_keeps_every_tensor(tmp_path, tokenizer_folder, monkeypatch, prefixed, preset):
    folder, vocab = tokenizer_folder
    make = {"tiny": glip_tiny, "tiny-a": glip_tiny_a}[preset]
    config = make(**SIZES, vocab_size=vocab)
    state = official_state(config)
    checkpoint = tmp_path / "glip.pth"
    save_official(checkpoint, state, prefixed)
    # The CLI builds the preset; shrink the presets to the fixture's sizes.
    from synground_assets.models.glip import config as config_module

    monkeypatch.setitem(config_module.PRESETS, preset, lambda: make(**SIZES, vocab_size=vocab))
    out = tmp_path / "converted"
    assert glip_cli(["convert", str(checkpoint), str(out), "--config", preset, "--bert", str(folder)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    model = GlipForGrounding.from_pretrained(out)
    assert not model.training
    loaded = model.state_dict()
    for key, tensor in state.items():
        if key in loaded:
            assert torch.equal(loaded[key], tensor), key
    assert set(state) - set(loaded) == {
        "language_backbone.body.model.embeddings.position_ids", "language_backbone.body.model.pooler.dense.weight",
        "language_backbone.body.model.pooler.dense.bias", *(f"rpn.anchor_generator.cell_anchors.{i}" for i in range(5))}
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(out)
    assert len(tokenizer) == vocab and tokenizer("a red cube").input_ids[0] == tokenizer.cls_token_id


def test_detect_preset_reads_the_keys():
    assert detect_preset(official_state(glip_tiny(**SIZES, vocab_size=50))) == "tiny"
    assert detect_preset(official_state(glip_tiny_a(**SIZES, vocab_size=50))) == "tiny-a"
    large_like = {f"backbone.body.layers.2.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(18)}
    assert detect_preset(large_like) == "large"


def test_missing_unexpected_and_misshapen_keys_are_all_listed(tmp_path):
    config = glip_tiny(**SIZES, vocab_size=50)
    state = official_state(config)
    del state["rpn.head.bias0"]
    del state["backbone.body.layers.1.blocks.1.attn.qkv.weight"]
    state["rpn.head.token_logits.weight"] = torch.zeros(1)
    state["backbone.fpn.fpn_inner2.weight"] = torch.zeros(16, 3, 1, 1)
    path = tmp_path / "bad.pth"
    save_official(path, state, prefixed=True)
    with pytest.raises(CheckpointMismatch) as error:
        load_official(path, config)
    message = str(error.value)
    assert "2 missing key(s): backbone.body.layers.1.blocks.1.attn.qkv.weight, rpn.head.bias0" in message
    assert "1 unexpected key(s): rpn.head.token_logits.weight" in message
    assert "backbone.fpn.fpn_inner2.weight (16, 3, 1, 1) vs (16, 16, 1, 1)" in message


def test_anchors_of_another_config_and_mixed_prefixes_are_refused(tmp_path):
    config = glip_tiny(**SIZES, vocab_size=50)
    state = official_state(config)
    state["rpn.anchor_generator.cell_anchors.0"] = torch.tensor([[-12.0, -12.0, 19.0, 19.0]])
    path = tmp_path / "anchors.pth"
    save_official(path, state, prefixed=False)
    with pytest.raises(CheckpointMismatch, match="cell_anchors.0 .* differs from the config's anchors"):
        load_official(path, config)
    mixed = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(official_state(config).items())}
    torch.save({"model": mixed}, path)
    with pytest.raises(CheckpointMismatch, match="carry the 'module.' prefix and"):
        load_official(path, config)


def test_files_with_pickled_objects_are_refused_not_loaded_unsafely(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "args": subprocess.CompletedProcess(["x"], 0)}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_official(path, glip_tiny(**SIZES, vocab_size=50))


def test_cli_reports_a_mismatch_without_a_traceback_and_writes_nothing(tmp_path, tokenizer_folder):
    folder, vocab = tokenizer_folder
    path = tmp_path / "other.pth"
    save_official(path, official_state(glip_tiny(**SIZES, vocab_size=vocab)), prefixed=True)
    out = tmp_path / "out"
    # Full-size GLIP-T against the tiny file: every shape differs.
    result = subprocess.run([sys.executable, "-m", "synground_assets.models.glip", "convert", str(path), str(out),
                             "--config", "tiny", "--bert", str(folder)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "GLIP" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
