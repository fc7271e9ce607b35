"""Every official ALBEF / AMC checkpoint layout converts through the CLI, strictly, tensor for tensor.

The fixtures are not made from this project's model: their keys and shapes are written out from
the official modules (salesforce/ALBEF models/vit.py, models/xbert.py, models/model_pretrain.py,
models/model_retrieval.py; uvavision/AMC-grounding models/model_pretrain.py), with random values,
so that a layout the converter does not expect fails here as it would on the released file.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from synground_assets.models.albef import AlbefConfig, from_pretrained
from synground_assets.models.albef.__main__ import main as albef_cli
from synground_assets.models.albef.pretrained import PRETRAINING_FILE
from synground_assets_tests.models.conftest import tiny_config

QUEUE = 64


def vit_keys(prefix: str, c: AlbefConfig) -> dict[str, tuple[int, ...]]:
    """ALBEF models/vit.py VisionTransformer (no head): patch_embed, cls_token, pos_embed, blocks, norm."""
    d, hidden = c.vision_width, int(c.vision_width * c.vision_mlp_ratio)
    keys = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + c.grid_side ** 2, d),
            "patch_embed.proj.weight": (d, 3, c.patch_size, c.patch_size), "patch_embed.proj.bias": (d,),
            "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(c.vision_layers):
        keys |= {f"blocks.{i}.norm1.weight": (d,), f"blocks.{i}.norm1.bias": (d,),
                 f"blocks.{i}.attn.qkv.weight": (3 * d, d), f"blocks.{i}.attn.qkv.bias": (3 * d,),
                 f"blocks.{i}.attn.proj.weight": (d, d), f"blocks.{i}.attn.proj.bias": (d,),
                 f"blocks.{i}.norm2.weight": (d,), f"blocks.{i}.norm2.bias": (d,),
                 f"blocks.{i}.mlp.fc1.weight": (hidden, d), f"blocks.{i}.mlp.fc1.bias": (hidden,),
                 f"blocks.{i}.mlp.fc2.weight": (d, hidden), f"blocks.{i}.mlp.fc2.bias": (d,)}
    return {f"{prefix}.{k}": v for k, v in keys.items()}


def bert_keys(prefix: str, c: AlbefConfig) -> dict[str, tuple[int, ...]]:
    """ALBEF models/xbert.py BertModel(add_pooling_layer=False): embeddings (with the persistent
    `position_ids` buffer) and layers; cross-attention from `fusion_layer` on (key/value from the
    image width)."""
    h, inner = c.text_width, c.intermediate_size
    keys = {"embeddings.word_embeddings.weight": (c.vocab_size, h),
            "embeddings.position_embeddings.weight": (c.max_position_embeddings, h),
            "embeddings.token_type_embeddings.weight": (c.type_vocab_size, h),
            "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
            "embeddings.position_ids": (1, c.max_position_embeddings)}
    for i in range(c.text_layers):
        layer = f"encoder.layer.{i}."
        attentions = ["attention"] + (["crossattention"] if i >= c.fusion_layer else [])
        for attention in attentions:
            width = c.vision_width if attention == "crossattention" else h
            keys |= {f"{layer}{attention}.self.query.weight": (h, h), f"{layer}{attention}.self.query.bias": (h,),
                     f"{layer}{attention}.self.key.weight": (h, width), f"{layer}{attention}.self.key.bias": (h,),
                     f"{layer}{attention}.self.value.weight": (h, width), f"{layer}{attention}.self.value.bias": (h,),
                     f"{layer}{attention}.output.dense.weight": (h, h), f"{layer}{attention}.output.dense.bias": (h,),
                     f"{layer}{attention}.output.LayerNorm.weight": (h,),
                     f"{layer}{attention}.output.LayerNorm.bias": (h,)}
        keys |= {f"{layer}intermediate.dense.weight": (inner, h), f"{layer}intermediate.dense.bias": (inner,),
                 f"{layer}output.dense.weight": (h, inner), f"{layer}output.dense.bias": (h,),
                 f"{layer}output.LayerNorm.weight": (h,), f"{layer}output.LayerNorm.bias": (h,)}
    return {f"{prefix}.{k}": v for k, v in keys.items()}


def mlm_head_keys(prefix: str, c: AlbefConfig) -> dict[str, tuple[int, ...]]:
    """xbert BertForMaskedLM's `cls.predictions` (decoder tied to the word embeddings, bias shared)."""
    h = c.text_width
    keys = {"bias": (c.vocab_size,), "transform.dense.weight": (h, h), "transform.dense.bias": (h,),
            "transform.LayerNorm.weight": (h,), "transform.LayerNorm.bias": (h,),
            "decoder.weight": (c.vocab_size, h), "decoder.bias": (c.vocab_size,)}
    return {f"{prefix}.cls.predictions.{k}": v for k, v in keys.items()}


def heads_keys(suffix: str, c: AlbefConfig) -> dict[str, tuple[int, ...]]:
    return {f"vision_proj{suffix}.weight": (c.embed_dim, c.vision_width), f"vision_proj{suffix}.bias": (c.embed_dim,),
            f"text_proj{suffix}.weight": (c.embed_dim, c.text_width), f"text_proj{suffix}.bias": (c.embed_dim,)}


def official_layout(layout: str, c: AlbefConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official checkpoint: `albef-pretrain` (ALBEF.pth, ALBEF_4M.pth:
    model_pretrain.py), `albef-grounding` (Grounding.py / Retrieval.py: model_retrieval.py), `amc`
    (AMC-grounding model_pretrain.py: two queue pointers)."""
    pretrain = layout in ("albef-pretrain", "amc")
    keys: dict[str, tuple[int, ...]] = {}
    for suffix in ("", "_m"):
        text = f"text_encoder{suffix}" + (".bert" if pretrain else "")
        keys |= vit_keys(f"visual_encoder{suffix}", c) | bert_keys(text, c) | heads_keys(suffix, c)
        if pretrain:
            keys |= mlm_head_keys(f"text_encoder{suffix}", c)
    keys |= {"itm_head.weight": (2, c.text_width), "itm_head.bias": (2,), "temp": (),
             "image_queue": (c.embed_dim, QUEUE), "text_queue": (c.embed_dim, QUEUE)}
    if layout == "albef-grounding":
        keys["idx_queue"] = (1, QUEUE)
    pointers = ("queue_ptr_img", "queue_ptr_txt") if layout == "amc" else ("queue_ptr",)
    return keys | {pointer: (1,) for pointer in pointers}


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[1])[None]
        elif key.startswith("queue_ptr") or key == "idx_queue":
            state[key] = torch.randint(0, QUEUE, shape, generator=generator)
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.05
    # The MLM decoder is tied: the official state dict holds the word embeddings and the bias again.
    for prefix in ("text_encoder", "text_encoder_m"):
        head = f"{prefix}.cls.predictions."
        if head + "decoder.weight" in state:
            state[head + "decoder.weight"] = state[f"{prefix}.bert.embeddings.word_embeddings.weight"]
            state[head + "decoder.bias"] = state[head + "bias"]
    return state


def official_name(project_key: str, pretrain: bool) -> str:
    """Where a key of the converted model comes from in the official file."""
    if pretrain and project_key.startswith("text_encoder.") and not project_key.startswith("text_encoder.cls."):
        return project_key.replace("text_encoder.", "text_encoder.bert.", 1)
    return project_key


@pytest.mark.parametrize("layout", ["albef-pretrain", "albef-grounding", "amc"])
def test_each_official_layout_converts_through_the_cli_tensor_for_tensor(layout, tmp_path, vocab_file):
    config = tiny_config()
    config.save(tmp_path)  # --config: the tiny sizes
    state = random_state(official_layout(layout, config))
    checkpoint = tmp_path / f"{layout}.pth"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {},
                "config": {"image_res": config.image_size}, "epoch": 29}, checkpoint)

    code = albef_cli(["convert", str(checkpoint), str(tmp_path / "out"), "--config", str(tmp_path),
                      "--vocab", str(vocab_file)])

    assert code == 0
    pretrain = layout != "albef-grounding"
    model, _ = from_pretrained(tmp_path / "out")
    assert model.config.mlm_head is pretrain
    converted = model.state_dict()
    for key, tensor in converted.items():
        assert torch.equal(tensor, state[official_name(key, pretrain)]), key
    used = {official_name(key, pretrain) for key in converted}
    # Momentum copies and queues travel to pretraining.safetensors, the pointers as AMC's two.
    extra = load_file(str(tmp_path / "out" / PRETRAINING_FILE))
    for key, tensor in extra.items():
        if key.startswith("momentum."):
            online = key.removeprefix("momentum.")
            top = online.split(".")[0]
            source = official_name(online, pretrain).replace(top, top + "_m", 1)
            assert torch.equal(tensor, state[source]), key
            used.add(source)
        elif key in ("queue_ptr_img", "queue_ptr_txt"):
            source = key if layout == "amc" else "queue_ptr"
            assert torch.equal(tensor, state[source]), key
            used.add(source)
        else:
            assert torch.equal(tensor, state[key]), key
            used.add(key)
    # Nothing of the file but what the converter may drop by rule went unused.
    unused = sorted(set(state) - used)
    droppable = ("position_ids", "decoder.weight", "decoder.bias", "idx_queue")
    assert all(key.endswith(droppable) for key in unused), unused
    momentum_tops = {key.split(".")[1] for key in extra if key.startswith("momentum.")}
    assert momentum_tops == {"visual_encoder", "text_encoder", "vision_proj", "text_proj"}


def test_a_pretrain_checkpoint_with_a_key_the_model_lacks_is_refused_by_name(tmp_path, vocab_file):
    config = tiny_config()
    config.save(tmp_path)
    state = random_state(official_layout("albef-pretrain", config))
    state["text_encoder.bert.pooler.dense.weight"] = torch.zeros(config.text_width, config.text_width)
    torch.save({"model": state}, tmp_path / "ALBEF.pth")
    with pytest.raises(Exception, match="unexpected keys: text_encoder.pooler.dense.weight"):
        albef_cli(["convert", str(tmp_path / "ALBEF.pth"), str(tmp_path / "out"), "--config", str(tmp_path),
                   "--vocab", str(vocab_file)])
    assert not (tmp_path / "out").exists()
