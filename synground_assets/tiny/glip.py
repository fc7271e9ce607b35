"""A tiny random-weight GLIP (`models/glip/`): every part of GLIP-T (Swin, FPN P3-P7, BERT, the
VL-DyHead with fusion, BERT and DyConv layers, the dot-product head) at a few thousand parameters, with
the tiny WordPiece tokenizer, saved as a converted folder is (`save_pretrained`) and reloaded."""

from __future__ import annotations

from pathlib import Path

from synground_assets.tiny.tokenizers import bert_tokenizer


def tiny_glip_config(vocab_size: int):
    from synground_assets.models.glip.config import glip_tiny

    return glip_tiny(
        variant="glip-t-tiny",
        swin_embed_dim=8, swin_depths=(1, 1, 2, 1), swin_heads=(1, 1, 2, 2), swin_window_size=4,
        fpn_channels=16, dyhead_channels=16, group_norm_groups=4, dyhead_num_convs=2,
        vocab_size=vocab_size, text_hidden_size=32, text_layers=2, text_heads=4, text_intermediate_size=37,
        text_max_position_embeddings=256,  # the query is always 256 tokens long
        fuse_embed_dim=32, fuse_heads=2,
        # bias0 = 0 instead of -log(99): random token scores near 0.5 pass the 0.05 candidate threshold,
        # so the post-processing (top-n, decoding, NMS) has boxes to work on.
        prior_prob=0.5,
    )


def build_glip(folder: Path) -> None:
    from transformers import BertTokenizerFast

    from synground_assets.models.glip.modeling import GlipForGrounding

    bert_tokenizer().save_pretrained(folder)
    tokenizer = BertTokenizerFast.from_pretrained(folder)  # the fast tokenizer, as a converted folder gives it
    model = GlipForGrounding(tiny_glip_config(len(tokenizer))).eval()
    model.save_pretrained(folder, tokenizer)
    GlipForGrounding.from_pretrained(folder)  # a folder that does not load back fails the build


BUILDERS = {"glip": build_glip}
