"""Tiny causal LM: Llama with the word-level chat tokenizer (Concept2Text, Text2Text, phrases)."""

from __future__ import annotations

from pathlib import Path

from synground_assets.tiny.tokenizers import chat_tokenizer


def llama_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        initializer_range=0.5,  # large random weights: the next token depends visibly on the prompt
    )


def build_causal_lm(folder: Path) -> None:
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer()
    model = LlamaForCausalLM(llama_config(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


BUILDERS = {"causal-lm": build_causal_lm}
