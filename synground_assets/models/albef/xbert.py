"""ALBEF's text and fusion encoder: BERT whose layers from `fusion_layer` on add cross-attention to
the image tokens (ALBEF models/xbert.py), with its parameter names in the grounding layout
(`embeddings.*`, `encoder.layer.{i}.*`, no pooler, no `bert.` prefix).

Modes (as xbert's `mode`): "text" runs layers [0, fusion_layer), "fusion" the rest on given hidden
states, "multi_modal" all of them. Attention masks are additive: (1 - mask) * -10000.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synground_assets.models.albef.config import AlbefConfig

MODES = ("text", "fusion", "multi_modal")


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, K) 1/0 -> (B, 1, 1, K): 0 where attended, -10000 where masked (BERT's extended mask)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * -10000.0


class BertEmbeddings(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.text_width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.text_width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.text_width)
        self.LayerNorm = nn.LayerNorm(config.text_width, eps=config.text_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # Not saved: the official files carry it (`*.position_ids`); the converter drops it.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_ids.shape[1]:
            raise ValueError(f"text of {length} tokens exceeds the {self.position_ids.shape[1]} positions")
        token_types = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(self.position_ids[:, :length])
        return self.dropout(self.LayerNorm(embeddings))  # (B, T, H)


class BertSelfAttention(nn.Module):
    def __init__(self, config: AlbefConfig, is_cross_attention: bool):
        super().__init__()
        self.heads = config.text_heads
        self.head_size = config.text_width // config.text_heads
        key_width = config.vision_width if is_cross_attention else config.text_width
        self.query = nn.Linear(config.text_width, config.text_width)
        self.key = nn.Linear(key_width, config.text_width)
        self.value = nn.Linear(key_width, config.text_width)
        self.dropout = nn.Dropout(config.attention_dropout_prob)
        self.captured: list[torch.Tensor] | None = None  # set to a list to record the probabilities

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_size).permute(0, 2, 1, 3)  # (B, heads, N, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, keys_from: torch.Tensor | None = None) -> torch.Tensor:
        source = hidden if keys_from is None else keys_from
        query = self.split_heads(self.query(hidden))  # (B, heads, T, d)
        key, value = self.split_heads(self.key(source)), self.split_heads(self.value(source))  # (B, heads, K, d)
        scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_size) + mask  # (B, heads, T, K)
        probabilities = scores.softmax(dim=-1)
        if self.captured is not None:
            self.captured.append(probabilities)  # after the softmax, before dropout (what GradCAM reads)
        context = self.dropout(probabilities) @ value  # (B, heads, T, d)
        return context.permute(0, 2, 1, 3).flatten(2)  # (B, T, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.dense = nn.Linear(config.text_width, config.text_width)
        self.LayerNorm = nn.LayerNorm(config.text_width, eps=config.text_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: AlbefConfig, is_cross_attention: bool = False):
        super().__init__()
        self.self = BertSelfAttention(config, is_cross_attention)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, keys_from: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.self(hidden, mask, keys_from), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.dense = nn.Linear(config.text_width, config.intermediate_size)
        self.act = nn.GELU()  # erf GELU, BERT's "gelu"

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class BertOutput(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.text_width)
        self.LayerNorm = nn.LayerNorm(config.text_width, eps=config.text_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: AlbefConfig, index: int):
        super().__init__()
        self.attention = BertAttention(config)
        self.has_cross_attention = index >= config.fusion_layer
        if self.has_cross_attention:
            self.crossattention = BertAttention(config, is_cross_attention=True)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden, mask, image_embeds=None, image_mask=None) -> torch.Tensor:
        hidden = self.attention(hidden, mask)
        if self.has_cross_attention:
            if image_embeds is None:
                raise ValueError("a fusion layer needs the image tokens (encoder_hidden_states)")
            hidden = self.crossattention(hidden, image_mask, image_embeds)
        return self.output(self.intermediate(hidden), hidden)


class BertEncoder(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.fusion_layer = config.fusion_layer
        self.layer = nn.ModuleList(BertLayer(config, i) for i in range(config.text_layers))

    def forward(self, hidden, mask, image_embeds=None, image_mask=None, mode: str = "multi_modal") -> torch.Tensor:
        layers = {"text": range(0, self.fusion_layer), "fusion": range(self.fusion_layer, len(self.layer)),
                  "multi_modal": range(len(self.layer))}[mode]
        for index in layers:
            hidden = self.layer[index](hidden, mask, image_embeds, image_mask)
        return hidden


class BertPredictionTransform(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.dense = nn.Linear(config.text_width, config.text_width)
        self.act = nn.GELU()
        self.LayerNorm = nn.LayerNorm(config.text_width, eps=config.text_layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    """The MLM head's `predictions`: transform, then the decoder tied to the word embeddings plus
    its own bias. The tied weight is passed in, not held, so a state dict never holds it twice."""

    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.transform = BertPredictionTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.transform(hidden), word_embeddings, self.bias)  # (B, T, V)


class BertOnlyMLMHead(nn.Module):
    """`cls.predictions.*` as in the pretrain layout (ALBEF models/xbert.py BertForMaskedLM.cls)."""

    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden, word_embeddings)


class BertModel(nn.Module):
    """`embeddings` + `encoder`; no pooler (ALBEF builds it with add_pooling_layer=False); with
    `config.mlm_head`, also the pretraining MLM head `cls` (the `amc` objective trains it)."""

    def __init__(self, config: AlbefConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.cls = BertOnlyMLMHead(config) if config.mlm_head else None

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, T, V) token logits, the decoder tied to the word embeddings."""
        if self.cls is None:
            raise ValueError("this ALBEF has no MLM head (config.mlm_head is false); enable_mlm_head() adds one")
        return self.cls(hidden, self.embeddings.word_embeddings.weight)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        mode: str = "multi_modal",
        encoder_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids (or, in fusion mode, (B, T, H) `encoder_embeds` from text mode) -> (B, T, H)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} but is {mode!r}")
        hidden = encoder_embeds if mode == "fusion" else self.embeddings(input_ids)
        mask = additive_mask(attention_mask, hidden.dtype)  # (B, 1, 1, T)
        image_mask = None
        if encoder_hidden_states is not None:
            image_ones = torch.ones(encoder_hidden_states.shape[:-1], device=hidden.device)
            image_mask = additive_mask(image_ones, hidden.dtype)  # (B, 1, 1, 1 + P): all attended
        return self.encoder(hidden, mask, encoder_hidden_states, image_mask, mode)
