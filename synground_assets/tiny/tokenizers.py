"""Tokenizers of the tiny models, trained here on a small corpus instead of downloaded: a word-level
chat tokenizer (causal LMs, LLaVA; T5 and, with a leading BOS, Gemma text encoders), CLIP's BPE
(Stable Diffusion, OWLv2) and BERT's WordPiece (BLIP, Grounding DINO)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from synground_assets.tiny.photos import PHOTO_CAPTIONS, PROCEDURAL_SCENES

# Special tokens of the tiny causal LM and LLaVA tokenizers.
PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# A generic role-tagged chat template (Zephyr-like) for the tiny causal LM.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# LLaVA-1.5's template shape: "USER: <image>\n<text> ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def corpus() -> list[str]:
    """Text the tiny tokenizers are trained on: the concept vocabulary, captions and prompt words."""
    data = resources.files("synground_assets") / "data"
    words = [
        line.strip()
        for name in ("concepts.txt", "attributes.txt")
        for line in (data / name).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    captions = [c for caps in PHOTO_CAPTIONS.values() for c in caps] + list(PROCEDURAL_SCENES)
    prompt_words = (
        "Describe this image in detail. Write one detailed sentence describing a photo that shows "
        "these concepts. List the short noun phrases that name objects in this description, one per "
        "line. Summarise these captions of one photo into one detailed description. Concepts: "
        "Captions: Description: Phrases: the a an of in on with and next to near behind above below. "
        "Is this an image of it? Answer yes or no."  # the crop verifier's question and answers
    )
    return words + captions + [prompt_words] * 3


# --- tokenizers -------------------------------------------------------------------------------


@lru_cache(maxsize=None)


def _word_level_json() -> str:
    """A word-level tokenizer over the corpus' words: generated text reads as words, not byte soup."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = sorted({w for text in corpus() for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = {token: index for index, token in enumerate([PAD, BOS, EOS, UNK, IMAGE, *ROLE_TOKENS, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


def word_tokenizer(**kwargs):
    """The word-level tokenizer with the chat roles' special tokens (T5 text encoders too)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_word_level_json()),
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[IMAGE, *ROLE_TOKENS],
        model_max_length=2048, **kwargs,
    )


def gemma_tokenizer():
    """The word-level tokenizer starting every text with <s>, as Gemma's tokenizer starts with its BOS
    (Sana keeps the prompt's first token, the BOS, and its last max_sequence_length - 1)."""
    from tokenizers import processors

    tokenizer = word_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.bos_token_id)])
    return tokenizer


def chat_tokenizer(chat_template: str = CHAT_TEMPLATE):
    """A word-level tokenizer with a chat template, for the tiny causal LM and LLaVA."""
    return word_tokenizer(chat_template=chat_template)


@lru_cache(maxsize=None)


def _clip_vocab_and_merges(vocab_size: int = 600) -> tuple[dict[str, int], list[str]]:
    """CLIP-style BPE (words end in '</w>'), trained here instead of downloaded."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    for char in alphabet:  # every byte must also exist as a word end, as in CLIP's own vocab
        vocab.setdefault(char + "</w>", len(vocab))
    # Special tokens last, as in CLIP: OWLv2 reads a query whose first token id is 0 as padding.
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges


def clip_tokenizer(model_max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


@lru_cache(maxsize=None)


def _wordpiece_vocab() -> tuple[str, ...]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()/&"))
    words = sorted({w.strip(".,:;!?\"'()").lower() for text in corpus() for w in text.split()} - {""})
    return tuple(dict.fromkeys(specials + chars + ["##" + c for c in chars] + words))


def bert_tokenizer(**kwargs):
    from transformers import BertTokenizer

    vocab = {token: index for index, token in enumerate(_wordpiece_vocab())}
    return BertTokenizer(vocab=vocab, **kwargs)
